using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Core.Storage;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// The store contract, the same tests on both stores: SQLite in a temp dir and PostgreSQL on a
/// private cluster (skipped without PostgreSQL, failed under CI). What the engine relies on:
/// round trips, answers after COMMIT only, linearizable read-modify-writes, one failing decision
/// failing alone, postgrey's expiry in bounded steps. Each store's own matters (SQLite's files
/// and locks, PostgreSQL's batches and schema) are tested in its own class.
/// </summary>
public sealed class StoreContractTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly List<IDisposable> _stores = [];

    public static TheoryData<string> Stores => new() { "sqlite", "postgresql" };

    /// <summary>A fresh store of the kind, and a way to count rows from outside it (another connection).</summary>
    private async Task<(IGreylistStore Store, Func<string, Task<long>> Count)> OpenAsync(string kind, int stepRows = 2000)
    {
        if (kind == "sqlite")
        {
            var options = new SqliteStoreOptions { Directory = _dir.Path, MaintenanceStepRows = stepRows };
            var sqlite = SqliteGreylistStore.Open(options, NullLogger.Instance);
            _stores.Add(sqlite);
            return (sqlite, sql =>
            {
                using var connection = new SqliteConnection($"Data Source={options.DatabasePath};Mode=ReadOnly;Pooling=False");
                connection.Open();
                using var command = connection.CreateCommand();
                command.CommandText = sql;
                return Task.FromResult(Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
            });
        }
        string database = await cluster.CreateDatabaseAsync();
        var pg = PostgreSqlGreylistStore.Open(PostgreSqlStores.Options(cluster, database, stepRows: stepRows), NullLogger.Instance);
        _stores.Add(pg);
        return (pg, sql => cluster.ScalarAsync(sql, database));
    }

    private static ValueTask<T> Run<T>(IGreylistStore store, Func<IGreylistTransaction, T> work) =>
        store.ExecuteAsync(work, static (tx, w) => w(tx), CancellationToken.None);

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_ReturnsOnlyAfterCommit_AnotherConnectionSeesTheWrite(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        await Run(store, tx => { tx.SaveTriplet("k", new TripletRecord(10, 20)); return 0; });
        Assert.Equal(1, await count("SELECT count(*) FROM triplets WHERE key = 'k' AND first_seen = 10 AND last_seen = 20"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_TripletAndClient_RoundTrip(string kind)
    {
        var (store, _) = await OpenAsync(kind);
        await Run(store, tx =>
        {
            tx.SaveTriplet("192.0.2/a@example.net/b@example.org", new TripletRecord(100, 160));
            tx.SaveClient("192.0.2", new ClientRecord(3, 99));
            return 0;
        });
        Assert.Equal(new TripletRecord(100, 160), await Run(store, tx => tx.FindTriplet("192.0.2/a@example.net/b@example.org")));
        Assert.Equal(new ClientRecord(3, 99), await Run(store, tx => tx.FindClient("192.0.2")));
        Assert.Null(await Run(store, tx => tx.FindTriplet("absent")));
        Assert.Null(await Run(store, tx => tx.FindClient("absent")));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_ReadsItsOwnWriteWithinTheDecision(string kind)
    {
        var (store, _) = await OpenAsync(kind);
        TripletRecord? seen = await Run(store, tx =>
        {
            tx.SaveTriplet("k", new TripletRecord(1, 2));
            tx.SaveTriplet("k", new TripletRecord(1, 3));
            return tx.FindTriplet("k");
        });
        Assert.Equal(new TripletRecord(1, 3), seen);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_ConcurrentIncrements_LoseNoUpdate(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        const int n = 500;
        await Task.WhenAll(Enumerable.Range(0, n).Select(_ => Task.Run(async () =>
            await Run(store, tx =>
            {
                long c = tx.FindClient("c")?.Count ?? 0;
                tx.SaveClient("c", new ClientRecord(c + 1, 0));
                return 0;
            }))));
        Assert.Equal(n, await count("SELECT count FROM clients WHERE key = 'c'"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_SimultaneousFirstSightings_OnlyOneIsNew(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        bool[] results = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => Task.Run(async () =>
            await Run(store, tx =>
            {
                if (tx.FindTriplet("t") is not null)
                {
                    return false;
                }
                tx.SaveTriplet("t", new TripletRecord(1, 1));
                return true;
            }))));
        Assert.Single(results, r => r);
        Assert.Equal(1, await count("SELECT count(*) FROM triplets"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task ExecuteAsync_OneFailingDecision_DoesNotUndoTheOthers(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        bool[] ok = await Task.WhenAll(Enumerable.Range(0, 100).Select(i => Task.Run(async () =>
        {
            try
            {
                await Run(store, tx =>
                {
                    tx.SaveTriplet("k" + i, new TripletRecord(i, i));
                    if (i % 10 == 3)
                    {
                        throw new InvalidOperationException("boom " + i);
                    }
                    return 0;
                });
                return true;
            }
            catch (InvalidOperationException ex) when (ex.Message == "boom " + i)
            {
                return false;
            }
        })));
        Assert.Equal(90, ok.Count(x => x));
        Assert.Equal(90, await count("SELECT count(*) FROM triplets"));
        Assert.Equal(0, await count("SELECT count(*) FROM triplets WHERE first_seen % 10 = 3"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task CleanAsync_DeletesWhatPostgreysMaintenanceDeletes_InSmallSteps(string kind)
    {
        var (store, count) = await OpenAsync(kind, stepRows: 3);
        const long now = 1_000_000;
        const long day = 86400;
        await Run(store, tx =>
        {
            tx.SaveTriplet("a-old", new TripletRecord(now - (40 * day), now - (36 * day)));         // past max-age
            tx.SaveTriplet("b-passed", new TripletRecord(now - (10 * day), now - (9 * day)));       // passed, recent
            tx.SaveTriplet("c-neverpassed", new TripletRecord(now - (3 * day), now - (3 * day)));   // never passed, past retry window
            tx.SaveTriplet("d-waiting", new TripletRecord(now - 100, now - 100));                   // never passed, within window
            tx.SaveTriplet("e-passed-old", new TripletRecord(now - (50 * day), now - (34 * day)));  // passed, within max-age
            for (int i = 0; i < 10; i++)
            {
                tx.SaveTriplet($"f-{i}", new TripletRecord(now - 1000, now - 500));                 // passed recently
            }
            tx.SaveClient("1.2.3.4", new ClientRecord(9, now - (36 * day)));
            tx.SaveClient("1.2.3.5", new ClientRecord(9, now - day));
            return 0;
        });

        MaintenanceReport report = await store.CleanAsync(new MaintenancePolicy(now, 35 * day, 300, 2 * day), CancellationToken.None);

        Assert.Equal(new MaintenanceReport(15, 13, 2, 1), report);
        Assert.Equal(0, await count("SELECT count(*) FROM triplets WHERE key IN ('a-old', 'c-neverpassed')"));
        Assert.Equal(13, await count("SELECT count(*) FROM triplets"));
        Assert.Equal(0, await count("SELECT count(*) FROM clients WHERE key = '1.2.3.4'"));
    }

    public void Dispose()
    {
        foreach (IDisposable store in _stores)
        {
            store.Dispose();
        }
        _dir.Dispose();
    }
}
