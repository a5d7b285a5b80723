using Microsoft.Extensions.Logging;
using Npgsql;
using Postgrey.Core.Storage;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// The server away, hung, or refusing us: decisions fail fast as "unavailable" (DUNNO), the
/// log says it once per change of state, and decisions come back without a restart. These
/// tests stop and start their cluster, so they have one of their own (tests of a class run one
/// after the other).
/// </summary>
public sealed class FaultTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private readonly CapturingLoggerProvider _logs = new();
    private readonly List<IDisposable> _disposables = [];

    private PostgreSqlGreylistStore Open(string database, TimeSpan? timeout = null, bool continueOnWriter = false)
    {
        var factory = new LoggerFactory([_logs]);
        _disposables.Add(factory);
        var options = PostgreSqlStores.Options(cluster, database, timeout) with { ReconnectMax = TimeSpan.FromSeconds(1), ContinueOnWriterThread = continueOnWriter };
        var store = PostgreSqlGreylistStore.Open(options, factory.CreateLogger("store"));
        _disposables.Add(store);
        return store;
    }

    private int LogCount(string start) => _logs.Messages().Count(m => m.StartsWith(start, StringComparison.Ordinal));

    private static ValueTask<T> Run<T>(IGreylistStore store, Func<IGreylistTransaction, T> work) =>
        store.ExecuteAsync(work, static (tx, w) => w(tx), CancellationToken.None);

    private static ValueTask<int> Save(IGreylistStore store, string key) =>
        Run(store, tx => { tx.SaveTriplet(key, new TripletRecord(1, 1)); return 0; });

    /// <summary>Asks until a decision commits (bounded): the store is back.</summary>
    private static async Task WaitUntilDecidingAsync(IGreylistStore store)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                await Save(store, "probe");
                return;
            }
            catch (StoreUnavailableException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    [Fact]
    public async Task Open_ServerDown_StartsAnswersUnavailable_ThenDecidesOnceItIsBack()
    {
        string db = await cluster.CreateDatabaseAsync();
        await cluster.StopAsync();
        try
        {
            var store = Open(db);
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await Save(store, "k"));
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await Save(store, "k"));
            Assert.Equal(1, LogCount("database postgresql://"));
            Assert.Contains(_logs.Messages(), m => m.Contains("unreachable", StringComparison.Ordinal));
        }
        finally
        {
            await cluster.StartAsync();
        }
        await WaitUntilDecidingAsync(_disposables.OfType<PostgreSqlGreylistStore>().Single());
        // The schema was created once the server was there.
        Assert.Equal(1, await cluster.ScalarAsync("SELECT max(version) FROM schema_version", db));
        Assert.Single(_logs.Messages(), m => m.Contains("reachable again", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ServerStoppedDuringLoad_UnavailableMeanwhile_OneLineEachWay_DecidesAgain()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        int committed = 0, unavailable = 0;
        using var stop = new CancellationTokenSource();
        // 16 clients asking in a loop, as Postfix's smtpd processes would.
        var load = Enumerable.Range(0, 16).Select(c => Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                try
                {
                    await Save(store, $"c{c}-{i}");
                    Interlocked.Increment(ref committed);
                }
                catch (StoreUnavailableException)
                {
                    Interlocked.Increment(ref unavailable);
                    await Task.Delay(5);
                }
            }
        })).ToList();

        await cluster.StopAsync();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (Volatile.Read(ref unavailable) < 200 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        await cluster.StartAsync();
        await WaitUntilDecidingAsync(store);
        int committedAfter = Volatile.Read(ref committed);
        deadline = DateTime.UtcNow.AddSeconds(30);
        while (Volatile.Read(ref committed) < committedAfter + 100 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        stop.Cancel();
        await Task.WhenAll(load);

        Assert.True(unavailable >= 200, $"{unavailable} requests answered unavailable");
        Assert.True(committed >= committedAfter + 100, "decisions again after the server came back");
        // Two lines for an outage of hundreds of requests: down, and back.
        Assert.Equal(1, _logs.Messages().Count(m => m.Contains("unreachable", StringComparison.Ordinal)));
        Assert.Equal(1, _logs.Messages().Count(m => m.Contains("reachable again", StringComparison.Ordinal)));
        Assert.DoesNotContain(_logs.Entries, e => e.Message.StartsWith("transaction of", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task HungServer_CallerAnsweredUnavailableAfterTheBoundedWait_ThenDecisionsResume(bool continueOnWriter)
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db, timeout: TimeSpan.FromSeconds(1), continueOnWriter);
        await Save(store, "k");
        // Another session holds the key's lock: the store's transaction waits, as on a hung server.
        await using (var other = new NpgsqlConnection(PostgreSqlStores.Options(cluster, db).ConnectionString + ";Pooling=false"))
        {
            await other.OpenAsync(TestContext.Current.CancellationToken);
            await using (var take = new NpgsqlCommand($"SELECT pg_advisory_lock({KeyRecorder.LockId('t', "k")})", other))
            {
                await take.ExecuteNonQueryAsync(TestContext.Current.CancellationToken);
            }
            var waits = Enumerable.Range(0, 5).Select(_ => Save(store, "k").AsTask()).ToList();
            foreach (var wait in waits)
            {
                await Assert.ThrowsAsync<StoreUnavailableException>(() => wait.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
            }
            Assert.Single(_logs.Messages(), m => m.Contains("did not answer within 1000 ms", StringComparison.Ordinal));
        }
        await WaitUntilDecidingAsync(store);
        await Save(store, "k");
        Assert.Contains(_logs.Messages(), m => m.Contains("answers again", StringComparison.Ordinal) || m.Contains("reachable again", StringComparison.Ordinal));
        await Task.Yield(); // off the writer (continueOnWriter): the store cannot be disposed from its own thread
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ContinueOnWriterThread_WhatAwaitsADecisionRunsOnTheWriterOnlyWhenAsked(bool continueOnWriter)
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db, continueOnWriter: continueOnWriter);
        // A synchronous continuation runs where the store completed the task, unless the store
        // sends it to the thread pool.
        string? thread = null;
        await Save(store, "k").AsTask().ContinueWith(_ => thread = Thread.CurrentThread.Name, TestContext.Current.CancellationToken, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        Assert.Equal(continueOnWriter, thread == "postgrey-pg-writer");
        await Task.Yield(); // off the writer: the store cannot be disposed from its own thread
    }

    [Fact]
    public async Task Open_WrongPassword_ThrowsNamingTheProblem()
    {
        string db = await cluster.CreateDatabaseAsync();
        var ex = Assert.Throws<PostgreSqlStoreException>(() => OpenTcp(db, "wrong"));
        Assert.Contains("password authentication failed", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"127.0.0.1:{cluster.Port}/{db}", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Open_NoPasswordAnywhere_ThrowsNamingTheProblem()
    {
        string db = await cluster.CreateDatabaseAsync();
        var ex = Assert.Throws<PostgreSqlStoreException>(() => OpenTcp(db, password: null));
        Assert.Contains("password", ex.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Open_PasswordFileMissing_ThrowsNamingIt()
    {
        string db = await cluster.CreateDatabaseAsync();
        var ex = Assert.Throws<PostgreSqlStoreException>(() => OpenTcp(db, password: null, passfile: "/nonexistent/pgpass"));
        Assert.Contains("/nonexistent/pgpass", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Open_PasswordFromAPgpassFile_Connects()
    {
        string db = await cluster.CreateDatabaseAsync();
        using var dir = new TempDirectory();
        string passfile = dir.Write("pgpass", $"127.0.0.1:{cluster.Port}:{db}:{PostgresCluster.User}:{PostgresCluster.Password}\n");
        File.SetUnixFileMode(passfile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var store = OpenTcp(db, password: null, passfile: passfile);
        await Save(store, "k");
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", db));
    }

    [Fact]
    public async Task Open_MissingDatabase_ThrowsNamingIt()
    {
        await cluster.StartAsync();
        var ex = Assert.Throws<PostgreSqlStoreException>(() => Open("no_such_db"));
        Assert.Contains("\"no_such_db\" does not exist", ex.Message, StringComparison.Ordinal);
    }

    private PostgreSqlGreylistStore OpenTcp(string db, string? password, string? passfile = null)
    {
        string uri = cluster.TcpUri(db) + (passfile is null ? "" : "?passfile=" + Uri.EscapeDataString(passfile));
        NpgsqlConnectionStringBuilder builder = PostgreSqlConnectionString.Parse(uri, out string error) ?? throw new InvalidOperationException(error);
        builder.Password = password;
        var factory = new LoggerFactory([_logs]);
        _disposables.Add(factory);
        var store = PostgreSqlGreylistStore.Open(
            new PostgreSqlStoreOptions { ConnectionString = builder.ConnectionString, Description = PostgreSqlConnectionString.Describe(builder) },
            factory.CreateLogger("store"));
        _disposables.Add(store);
        return store;
    }

    public void Dispose()
    {
        foreach (IDisposable d in _disposables)
        {
            d.Dispose();
        }
    }
}
