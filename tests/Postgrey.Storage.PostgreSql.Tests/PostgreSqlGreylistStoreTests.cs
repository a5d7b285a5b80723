using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Postgrey.Core.Storage;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// What only a shared store has to get right: several stores (as on several hosts) on one
/// database, batching, schema, maintenance by one host at a time. Real PostgreSQL, a private cluster.
/// </summary>
public sealed class PostgreSqlGreylistStoreTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private readonly List<IDisposable> _disposables = [];

    private PostgreSqlGreylistStore Open(string database, ILogger? logger = null, int stepRows = 2000) =>
        Open(PostgreSqlStores.Options(cluster, database, stepRows: stepRows), logger);

    private PostgreSqlGreylistStore Open(PostgreSqlStoreOptions options, ILogger? logger = null)
    {
        var store = PostgreSqlGreylistStore.Open(options, logger ?? NullLogger.Instance);
        _disposables.Add(store);
        return store;
    }

    private static ValueTask<T> Run<T>(PostgreSqlGreylistStore store, Func<IGreylistTransaction, T> work) =>
        store.ExecuteAsync(work, static (tx, w) => w(tx), CancellationToken.None);

    [Fact]
    public async Task Open_NewDatabase_CreatesTheSchemaWithItsVersion()
    {
        string db = await cluster.CreateDatabaseAsync();
        Open(db);
        Assert.Equal(1, await cluster.ScalarAsync("SELECT max(version) FROM schema_version", db));
        Assert.Equal(2, await cluster.ScalarAsync("SELECT count(*) FROM pg_tables WHERE tablename IN ('triplets', 'clients')", db));
    }

    [Fact]
    public async Task Open_TwoStoresAtOnceOnANewDatabase_OneSchema()
    {
        string db = await cluster.CreateDatabaseAsync();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => Open(db))));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM schema_version", db));
    }

    [Fact]
    public async Task Open_SchemaNewerThanThisProgram_Refuses()
    {
        string db = await cluster.CreateDatabaseAsync();
        Open(db).Dispose();
        await cluster.PsqlAsync("INSERT INTO schema_version VALUES (99)", db);
        var ex = Assert.Throws<PostgreSqlStoreException>(() => Open(db));
        Assert.Contains("schema version 99", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ExecuteAsync_ManyConcurrentDecisions_AreBatched()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        const int n = 2000;
        await Task.WhenAll(Enumerable.Range(0, n).Select(i => Task.Run(async () =>
            await Run(store, tx =>
            {
                tx.FindClient($"c{i % 50}");
                tx.SaveTriplet($"t{i}", new TripletRecord(i, i));
                return 0;
            }))));
        Assert.Equal(n, await cluster.ScalarAsync("SELECT count(*) FROM triplets", db));
        // Far fewer transactions than decisions; every key found by the first pass.
        Assert.True(store.Batches < n / 4, $"{store.Batches} transactions for {n} decisions");
        Assert.Equal(0, store.ExtraReads);
    }

    /// <summary>A store whose batches, under load, wait up to <paramref name="wait"/> for 10 decisions.</summary>
    private PostgreSqlGreylistStore OpenGathering(string database, TimeSpan wait) =>
        Open(PostgreSqlStores.Options(cluster, database, timeout: TimeSpan.FromMinutes(2)) with { BatchTarget = 10, BatchWait = wait, LoadedBatch = 8 });

    private static ValueTask<int> Save(PostgreSqlGreylistStore store, string key) =>
        Run(store, tx => { tx.SaveTriplet(key, new TripletRecord(1, 1)); return 0; });

    /// <summary>Makes the store's last batch hold 9 decisions: they queue while a slow one runs.</summary>
    private static async Task LoadAsync(PostgreSqlGreylistStore store)
    {
        ValueTask<int> slow = Run(store, tx => { Thread.Sleep(200); tx.SaveTriplet("slow", new TripletRecord(1, 1)); return 0; });
        await Task.Delay(50);
        Task[] queued = Enumerable.Range(0, 9).Select(i => Save(store, $"load{i}").AsTask()).ToArray();
        await slow;
        await Task.WhenAll(queued);
    }

    [Fact]
    public async Task ExecuteAsync_UnderLoad_ABatchWaitsForMoreDecisions_OneTransactionForAll()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = OpenGathering(db, TimeSpan.FromSeconds(60));
        await LoadAsync(store);

        Task[] first = Enumerable.Range(0, 5).Select(i => Save(store, $"a{i}").AsTask()).ToArray();
        Task all = Task.WhenAll(first);
        // Under load a short queue waits for the batch target (10), not for the writer.
        Assert.NotSame(all, await Task.WhenAny(all, Task.Delay(500)));
        Assert.Equal(0, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key LIKE 'a%'", db));

        Task[] second = Enumerable.Range(5, 5).Select(i => Save(store, $"a{i}").AsTask()).ToArray();
        await Task.WhenAll(first.Concat(second)).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(10, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key LIKE 'a%'", db));
        // One transaction wrote them all: one xmin (store.Batches is counted after the answers).
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(DISTINCT xmin::text) FROM triplets WHERE key LIKE 'a%'", db));
    }

    [Fact]
    public async Task ExecuteAsync_UnderLoad_FewDecisions_StartAfterTheWaitAtMost()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = OpenGathering(db, TimeSpan.FromMilliseconds(300));
        await LoadAsync(store);
        // The target is never reached: the wait (300 ms), not the target, ends the gathering.
        Task lone = Save(store, "lone").AsTask();
        Assert.NotSame(lone, await Task.WhenAny(lone, Task.Delay(100)));
        await lone.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key = 'lone'", db));
    }

    [Fact]
    public async Task ExecuteAsync_LightLoad_ABatchStartsAtOnce()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = OpenGathering(db, TimeSpan.FromMinutes(1));
        // One decision after another: every batch holds one, so none waits the minute.
        for (int i = 0; i < 3; i++)
        {
            await Save(store, $"light{i}").AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
        Assert.Equal(3, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key LIKE 'light%'", db));
    }

    [Fact]
    public async Task Dispose_WhileABatchWaitsForMore_CommitsWhatWasQueued()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = OpenGathering(db, TimeSpan.FromMinutes(1));
        await LoadAsync(store);
        Task pending = Save(store, "last").AsTask();
        await Task.Delay(200);
        await Task.Run(store.Dispose).WaitAsync(TimeSpan.FromSeconds(30));
        await pending.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key = 'last'", db));
    }

    [Fact]
    public async Task ExecuteAsync_KeyTheFirstPassMissed_IsReadInTheSameTransaction()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        await Run(store, tx => { tx.SaveTriplet("pointer", new TripletRecord(7, 7)); tx.SaveTriplet("k7", new TripletRecord(70, 71)); return 0; });
        // The key it reads depends on what it found: the first pass (which finds nothing) cannot know it.
        TripletRecord? found = await Run(store, tx => tx.FindTriplet("pointer") is { } p ? tx.FindTriplet($"k{p.FirstSeen}") : null);
        Assert.Equal(new TripletRecord(70, 71), found);
        Assert.Equal(1, store.ExtraReads);
    }

    [Fact]
    public async Task ExecuteAsync_DecisionStoppedAtAMissedKey_RunsAgainFromScratch_WritesOnce()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        await Run(store, tx =>
        {
            tx.SaveTriplet("pointer", new TripletRecord(7, 7));
            tx.SaveTriplet("k7", new TripletRecord(70, 71));
            tx.SaveClient("c", new ClientRecord(1, 1));
            return 0;
        });
        long seen = await Run(store, tx =>
        {
            ClientRecord c = tx.FindClient("c") ?? new ClientRecord(0, 0);
            tx.SaveClient("c", c with { Count = c.Count + 1 }); // written before the decision stops
            TripletRecord? p = tx.FindTriplet("pointer");
            tx.FindTriplet($"k{p?.FirstSeen}"); // unknown to the first pass: the decision stops, is undone, runs again
            return tx.FindClient("c")!.Value.Count;
        });
        Assert.Equal(2, seen);
        Assert.Equal(2, await cluster.ScalarAsync("SELECT count FROM clients WHERE key = 'c'", db));
        Assert.Equal(1, store.ExtraReads);
    }

    [Fact]
    public async Task Decisions_TableGrownAfterTheStatementsWerePrepared_ReadByIndexNeverScanned()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        // One decision per batch: the writer's statements are prepared and planned on a table of a few rows.
        for (int i = 0; i < 20; i++)
        {
            await Run(store, tx => { tx.FindClient("c"); tx.SaveTriplet($"t{i}", new TripletRecord(i, i)); return 0; });
        }
        await cluster.PsqlAsync("INSERT INTO triplets SELECT 'x' || i, 1, 1 FROM generate_series(1, 100000) i", db);
        // A server process hands in its statistics at most once a second, at the end of a
        // transaction: one more after a pause, so that nothing counted before is counted after the reset.
        await Task.Delay(1500);
        await Run(store, tx => tx.FindClient("c"));
        await cluster.PsqlAsync("SELECT pg_stat_reset()", db);
        for (int i = 0; i < 20; i++)
        {
            await Run(store, tx => { tx.FindClient("c"); tx.SaveTriplet($"x{i}", new TripletRecord(i, i)); return 0; });
        }
        store.Dispose(); // its server process ends and hands in its statistics
        long indexed = 0;
        for (int wait = 0; wait < 100 && indexed < 20; wait++)
        {
            await Task.Delay(100);
            indexed = await cluster.ScalarAsync("SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'triplets'", db);
        }
        Assert.True(indexed >= 20, $"{indexed} index scans of triplets for 20 batches");
        Assert.Equal(0, await cluster.ScalarAsync("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'triplets'", db));
    }

    [Fact]
    public async Task TwoStores_GreylistedViaA_FoundViaB()
    {
        string db = await cluster.CreateDatabaseAsync();
        var a = Open(db);
        var b = Open(db);
        await Run(a, tx => { tx.SaveTriplet("t", new TripletRecord(1000, 1000)); return 0; });
        Assert.Equal(new TripletRecord(1000, 1000), await Run(b, tx => tx.FindTriplet("t")));
    }

    [Fact]
    public async Task TwoStores_200ConcurrentFirstRequestsOfOneTriplet_OneRowOneFirstSeen()
    {
        string db = await cluster.CreateDatabaseAsync();
        var a = Open(db);
        var b = Open(db);
        // Each request would store its own first-seen if it found none: exactly one may.
        var results = await Task.WhenAll(Enumerable.Range(1, 200).Select(i => Task.Run(async () =>
            await Run(i % 2 == 0 ? a : b, tx =>
            {
                TripletRecord? found = tx.FindTriplet("192.0.2/a@example.net/b@example.org");
                long first = found?.FirstSeen ?? i;
                tx.SaveTriplet("192.0.2/a@example.net/b@example.org", new TripletRecord(first, i));
                return (Created: found is null, First: first);
            }))));
        var created = Assert.Single(results, r => r.Created);
        Assert.All(results, r => Assert.Equal(created.First, r.First));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", db));
        Assert.Equal(created.First, await cluster.ScalarAsync("SELECT first_seen FROM triplets", db));
    }

    [Fact]
    public async Task TwoStores_AutoWhitelistCountsFromBoth_NoneLost()
    {
        string db = await cluster.CreateDatabaseAsync();
        var a = Open(db);
        var b = Open(db);
        const int n = 400;
        await Task.WhenAll(Enumerable.Range(0, n).Select(i => Task.Run(async () =>
            await Run(i % 2 == 0 ? a : b, tx =>
            {
                long count = tx.FindClient("192.0.2")?.Count ?? 0;
                tx.SaveClient("192.0.2", new ClientRecord(count + 1, i));
                return 0;
            }))));
        Assert.Equal(n, await cluster.ScalarAsync("SELECT count FROM clients WHERE key = '192.0.2'", db));
    }

    [Fact]
    public async Task CleanAsync_AnotherInstanceIsCleaning_SkipsAndSaysSo()
    {
        string db = await cluster.CreateDatabaseAsync();
        var logs = new CapturingLoggerProvider();
        using var factory = new LoggerFactory([logs]);
        var b = Open(db, factory.CreateLogger("b"));
        await Run(b, tx => { tx.SaveTriplet("old", new TripletRecord(1, 2)); return 0; });
        var policy = new MaintenancePolicy(100 * 86400, 35 * 86400, 300, 2 * 86400);

        // Another instance in the middle of its run holds the cleaning lock on its connection.
        await using (var other = new NpgsqlConnection(PostgreSqlStores.Options(cluster, db).ConnectionString + ";Pooling=false"))
        {
            await other.OpenAsync(TestContext.Current.CancellationToken);
            await using var take = new NpgsqlCommand("SELECT pg_try_advisory_lock(" + Schema.LockClass + ", " + Schema.MaintenanceLock + ")", other);
            Assert.True((bool)(await take.ExecuteScalarAsync(TestContext.Current.CancellationToken))!);

            MaintenanceReport skipped = await b.CleanAsync(policy, CancellationToken.None);
            Assert.True(skipped.Skipped);
            Assert.Contains(logs.Messages(), m => m.StartsWith("cleaning skipped: another host sharing", StringComparison.Ordinal));
            Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", db));
        }

        // That instance is gone (its lock with its connection): this one cleans.
        MaintenanceReport ran = await b.CleanAsync(policy, CancellationToken.None);
        Assert.False(ran.Skipped);
        Assert.Equal(0, await cluster.ScalarAsync("SELECT count(*) FROM triplets", db));
    }

    [Fact]
    public async Task CleanAsync_TwoInstancesAtOnce_OneCleansTheOtherSkips()
    {
        string db = await cluster.CreateDatabaseAsync();
        var a = Open(db, stepRows: 10);
        var b = Open(db, stepRows: 10);
        // Enough rows for many small steps, so the two runs overlap.
        await cluster.PsqlAsync("INSERT INTO triplets SELECT 'k' || g, 1, 2 FROM generate_series(1, 20000) g", db);
        var policy = new MaintenancePolicy(100 * 86400, 35 * 86400, 300, 2 * 86400);
        var reports = await Task.WhenAll(a.CleanAsync(policy, CancellationToken.None).AsTask(), b.CleanAsync(policy, CancellationToken.None).AsTask());
        Assert.Single(reports, r => r.Skipped);
        Assert.Single(reports, r => !r.Skipped && r.TripletsBefore == 20000 && r.TripletsAfter == 0);
    }

    [Fact]
    public async Task ExecuteAsync_AfterDispose_Throws()
    {
        string db = await cluster.CreateDatabaseAsync();
        var store = Open(db);
        store.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await Run(store, tx => 0));
    }

    public void Dispose()
    {
        foreach (IDisposable d in _disposables)
        {
            d.Dispose();
        }
    }
}
