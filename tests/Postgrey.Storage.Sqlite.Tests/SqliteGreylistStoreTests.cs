using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Core.Storage;
using Postgrey.Testing;

namespace Postgrey.Storage.Sqlite.Tests;

/// <summary>
/// The store over real SQLite files in a temp directory: what is SQLite's own (files, WAL, locks,
/// damage). The store contract, shared with PostgreSQL, is tested on both stores by
/// Postgrey.Storage.PostgreSql.Tests/StoreContractTests.
/// </summary>
public sealed class SqliteGreylistStoreTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    private SqliteStoreOptions Options(int stepRows = 2000) => new() { Directory = _dir.Path, MaintenanceStepRows = stepRows };

    private SqliteGreylistStore Open(int stepRows = 2000) => SqliteGreylistStore.Open(Options(stepRows), NullLogger.Instance);

    private long Scalar(string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Options().DatabasePath};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static ValueTask<T> Run<T>(SqliteGreylistStore store, Func<IGreylistTransaction, T> work) =>
        store.ExecuteAsync(work, static (tx, w) => w(tx), CancellationToken.None);

    [Theory]
    [InlineData(256 * 1024, true)]
    [InlineData(long.MaxValue, false)] // PASSIVE checkpoints alone: the WAL only grows
    public async Task SustainedWrites_TheWalStartsOverPastItsLimit(long walRestartBytes, bool bounded)
    {
        var options = Options() with { WalRestartBytes = walRestartBytes, CheckpointInterval = TimeSpan.FromMilliseconds(20) };
        long largest = 0;
        int written = 0;
        using (var store = SqliteGreylistStore.Open(options, NullLogger.Instance))
        {
            while (written < 200_000)
            {
                // 64 decisions at a time, as from 64 connections: the writer never pauses for long.
                await Task.WhenAll(Enumerable.Range(0, 64).Select(_ =>
                {
                    int n = Interlocked.Increment(ref written);
                    return Run(store, tx => { tx.SaveTriplet($"192.0.2.0/sender{n}@example.net/rcpt{n}@example.org", new TripletRecord(n, n)); return 0; }).AsTask();
                }));
                largest = Math.Max(largest, new FileInfo(options.DatabasePath + "-wal").Length);
            }
        }
        Assert.Equal(written, Scalar("SELECT count(*) FROM triplets"));
        // Measured: about 7 MB with the limit, about 70 MB without it (one frame per write).
        Assert.True(bounded == largest < 24 * 1024 * 1024, $"largest WAL: {largest} bytes");
    }

    [Fact]
    public async Task Reopen_FindsEverythingCommitted()
    {
        using (var store = Open())
        {
            await Run(store, tx => { tx.SaveTriplet("persist", new TripletRecord(5, 6)); return 0; });
        }
        using var reopened = Open();
        Assert.Equal(new TripletRecord(5, 6), await Run(reopened, tx => tx.FindTriplet("persist")));
    }

    [Fact]
    public void Open_SecondInstanceOnTheSameDbdir_IsLocked()
    {
        using var first = Open();
        var ex = Assert.Throws<StoreLockedException>(() => Open());
        Assert.Equal(Path.Combine(_dir.Path, "postgrey.lock"), ex.LockPath);
        Assert.Equal($"locked: {ex.LockPath}", ex.Message);
    }

    [Fact]
    public void Open_AfterTheFirstIsDisposed_Succeeds()
    {
        Open().Dispose();
        using var second = Open();
        Assert.True(File.Exists(second.DatabasePath));
    }

    [Fact]
    public void Open_CreatesFilesReadableByTheOwnerOnly()
    {
        using var store = Open();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(store.DatabasePath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_dir.Path, "postgrey.lock")));
    }

    [Fact]
    public void Open_NewDatabase_HasSmallPagesAndWal()
    {
        Open().Dispose();
        Assert.Equal(1024, Scalar("PRAGMA page_size"));
        using var connection = new SqliteConnection($"Data Source={Options().DatabasePath};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", command.ExecuteScalar());
    }

    [Fact]
    public void Open_NotADatabase_FailsClearly()
    {
        File.WriteAllText(Options().DatabasePath, new string('x', 8192));
        var ex = Assert.Throws<SqliteException>(() => Open());
        Assert.Contains("not a database", ex.Message, StringComparison.Ordinal);
        File.Delete(Options().DatabasePath);
        using var _ = Open(); // the failed attempt released the lock
    }

    [Fact]
    public void Open_NewerSchema_IsRefused()
    {
        Open().Dispose();
        using (var connection = new SqliteConnection($"Data Source={Options().DatabasePath};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "INSERT INTO schema_version (version) VALUES (99)";
            command.ExecuteNonQuery();
        }
        var ex = Assert.Throws<InvalidOperationException>(() => Open());
        Assert.Contains("schema version 99", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_FinishesQueuedDecisionsFirst()
    {
        var store = Open();
        var pending = Enumerable.Range(0, 50).Select(i => Run(store, tx => { tx.SaveTriplet("q" + i, new TripletRecord(i, i)); return i; }).AsTask()).ToArray();
        store.Dispose();
        await Task.WhenAll(pending);
        Assert.Equal(50, Scalar("SELECT count(*) FROM triplets"));
    }

    private SqliteConnection HoldWriteLock()
    {
        // What an admin's sqlite3 session or a backup tool does: another process's write lock.
        var admin = new SqliteConnection($"Data Source={Options().DatabasePath};Pooling=False");
        admin.Open();
        using var hold = admin.CreateCommand();
        hold.CommandText = "BEGIN EXCLUSIVE";
        hold.ExecuteNonQuery();
        return admin;
    }

    private static Task<int> Save(SqliteGreylistStore store, string key) =>
        Run(store, tx => { tx.SaveTriplet(key, new TripletRecord(1, 1)); return 1; }).AsTask();

    [Fact]
    public async Task ExecuteAsync_AnotherConnectionHoldsTheWriteLock_EveryDecisionTimesOutWithinTheBound_ThenWorks()
    {
        using var store = SqliteGreylistStore.Open(Options() with { DecisionTimeout = TimeSpan.FromSeconds(1) }, NullLogger.Instance);
        using (HoldWriteLock())
        {
            // 300 decisions in several batches. Before: the first batch waited 5 s, then each
            // of its decisions 5 s again alone, one after the other (25 minutes here).
            Task<int>[] decisions = [.. Enumerable.Range(0, 300).Select(i => Save(store, "k" + i))];
            Task all = Task.WhenAll(decisions);
            await Task.WhenAny(all).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
            Assert.All(decisions, d => Assert.IsType<TimeoutException>(d.Exception?.InnerException));
        }
        Assert.Equal(1, await Save(store, "after"));
        // Decisions nobody waited for any more were not run.
        Assert.Equal(1, Scalar("SELECT count(*) FROM triplets"));
    }

    [Fact]
    public async Task Dispose_WhileAnotherConnectionHoldsTheWriteLock_StopsWithoutWaitingForIt()
    {
        var store = SqliteGreylistStore.Open(Options() with { DecisionTimeout = TimeSpan.FromSeconds(30) }, NullLogger.Instance);
        using var admin = HoldWriteLock();
        Task<int>[] decisions = [.. Enumerable.Range(0, 2000).Select(i => Save(store, "k" + i))];

        // Bounded by the test: before, the close drained every batch, each waiting 5 s per decision.
        await Task.Run(store.Dispose, TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(20), TestContext.Current.CancellationToken);

        Assert.All(decisions, d => Assert.True(d.IsFaulted));
    }

    [Fact]
    public async Task Open_DamagedPageInTheMiddle_FailsSayingWhatToDo()
    {
        using (var store = Open())
        {
            await Task.WhenAll(Enumerable.Range(0, 5000).Select(i => Save(store, $"192.0.2.0/sender{i}@example.net/rcpt{i}@example.org")));
        }
        string path = Options().DatabasePath;
        long pages = new FileInfo(path).Length / 1024;
        using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            file.Position = pages / 2 * 1024;
            file.Write(Enumerable.Repeat((byte)0xA5, 1024).ToArray());
        }

        var ex = Assert.Throws<StoreDamagedException>(() => Open());

        Assert.Contains("it is damaged (", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"Restore it from a backup; or, to start afresh with an empty database (every triplet is then new), move it away with any -wal and -shm file beside it: mv {path} {path}.damaged", ex.Message, StringComparison.Ordinal);
        using var _ = new FileStream(Options().LockPath, FileMode.Open, FileAccess.ReadWrite, FileShare.None); // the lock was released
    }

    private static async Task WaitForAsync(CapturingLoggerProvider logs, string text)
    {
        for (int i = 0; i < 300 && !logs.Messages().Any(m => m.Contains(text, StringComparison.Ordinal)); i++)
        {
            await Task.Delay(100);
        }
        Assert.Contains(logs.Messages(), m => m.Contains(text, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("deleted")]
    [InlineData("replaced")]
    [InlineData("wal")]
    public async Task FilesRemovedWhileOpen_AreWrittenOutAgain_NothingIsLost(string how)
    {
        var logs = new CapturingLoggerProvider();
        string path = Options().DatabasePath;
        var store = SqliteGreylistStore.Open(Options() with { CheckpointInterval = TimeSpan.FromMilliseconds(50) }, logs.CreateLogger("store"));
        try
        {
            await Task.WhenAll(Enumerable.Range(0, 100).Select(i => Save(store, "before" + i)));
            switch (how)
            {
                case "deleted":
                    File.Delete(path);
                    await WaitForAsync(logs, "the database file was deleted or moved away while in use");
                    await WaitForAsync(logs, $"database {path} written out again from the open connection (100 triplets): nothing is lost");
                    break;
                case "replaced":
                    File.WriteAllText(_dir.File("other"), "another file");
                    File.Move(_dir.File("other"), path, overwrite: true);
                    await WaitForAsync(logs, "the database file was replaced by another file while in use");
                    await WaitForAsync(logs, "the file found in its place is kept as " + path + ".replaced-");
                    Assert.Equal("another file", File.ReadAllText(Directory.GetFiles(_dir.Path, "postgrey.sqlite3.replaced-*").Single()));
                    break;
                default:
                    File.Delete(path + "-wal");
                    await WaitForAsync(logs, "its WAL file (the latest decisions) was deleted while in use");
                    await WaitForAsync(logs, "the deleted WAL was copied into the database and a new WAL started");
                    break;
            }
            await Task.WhenAll(Enumerable.Range(0, 100).Select(i => Save(store, "after" + i)));
        }
        finally
        {
            store.Dispose();
        }
        Assert.Equal(200, Scalar("SELECT count(*) FROM triplets"));
    }

    [Fact]
    public async Task Round_CommitsItsDecisionsOnTheCallersThread_BeforeEndRoundReturns()
    {
        using var store = Open();
        int caller = Environment.CurrentManagedThreadId;
        var ran = new List<int>();
        store.BeginRound();
        ValueTask<int>[] decisions = [.. Enumerable.Range(0, 3).Select(n => Run(store, tx =>
        {
            ran.Add(Environment.CurrentManagedThreadId);
            tx.SaveTriplet($"round{n}", new TripletRecord(n, n));
            return n;
        }))];
        Assert.Empty(ran); // held until the round ends
        Assert.DoesNotContain(decisions, d => d.IsCompleted);
        store.EndRound();
        Assert.All(decisions, d => Assert.True(d.IsCompletedSuccessfully));
        Assert.Equal([caller, caller, caller], ran);
        Assert.Equal(3, Scalar("SELECT count(*) FROM triplets WHERE key LIKE 'round%'"));
        // Outside a round, the writer thread runs them, as before.
        int writer = await Run(store, _ => Environment.CurrentManagedThreadId);
        Assert.NotEqual(caller, writer);
    }

    [Fact]
    public async Task Round_WhileAnotherProcessHoldsTheWriteLock_GoesToTheWriter_AndCommitsOnceItIsFree()
    {
        using var store = Open();
        using var other = new SqliteConnection($"Data Source={Options().DatabasePath};Pooling=False");
        other.Open();
        using (var begin = other.CreateCommand())
        {
            begin.CommandText = "BEGIN IMMEDIATE";
            begin.ExecuteNonQuery();
        }
        int caller = Environment.CurrentManagedThreadId;
        store.BeginRound();
        ValueTask<int> decision = Run(store, tx =>
        {
            tx.SaveTriplet("held", new TripletRecord(1, 1));
            return Environment.CurrentManagedThreadId;
        });
        store.EndRound(); // returns at once: the loop never waits for another process's lock
        Assert.False(decision.IsCompleted);
        using (var commit = other.CreateCommand())
        {
            commit.CommandText = "COMMIT";
            commit.ExecuteNonQuery();
        }
        Assert.NotEqual(caller, await decision);
        Assert.Equal(1, Scalar("SELECT count(*) FROM triplets WHERE key = 'held'"));
    }

    [Fact]
    public void Round_DecisionsStartedOnOtherThreads_AreNotHeld()
    {
        using var store = Open();
        store.BeginRound();
        try
        {
            // Another thread's decision (the identity lookup's continuation, a tool) commits
            // through the writer while this thread's round is open. A thread of its own: a
            // pool thread could be this very one once the test awaited.
            int n = 0;
#pragma warning disable VSTHRD002 // a thread of its own, with no synchronisation context to deadlock on
            var other = new Thread(() => n = Run(store, tx => { tx.SaveTriplet("other", new TripletRecord(1, 1)); return 1; }).AsTask().GetAwaiter().GetResult());
#pragma warning restore VSTHRD002
            other.Start();
            Assert.True(other.Join(TimeSpan.FromSeconds(30)), "the other thread's decision was held by this thread's round");
            Assert.Equal(1, n);
        }
        finally
        {
            store.EndRound();
        }
        Assert.Equal(1, Scalar("SELECT count(*) FROM triplets WHERE key = 'other'"));
    }

    public void Dispose() => _dir.Dispose();
}
