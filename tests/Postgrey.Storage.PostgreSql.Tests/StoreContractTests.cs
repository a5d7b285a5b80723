using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Postgrey.Core.Storage;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// The store contract, the same tests on both stores: SQLite in a temp dir and PostgreSQL on a
/// private cluster. What the engine relies on: round trips, answers after COMMIT only,
/// linearizable read-modify-writes, one failing decision failing alone.
/// </summary>
public sealed class StoreContractTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly List<IDisposable> _stores = [];

    public static TheoryData<string> Stores => new() { "sqlite", "postgresql" };

    /// <summary>A fresh store of the kind, and a way to count rows from outside it (another connection).</summary>
    private async Task<(IGreylistStore Store, Func<string, Task<long>> Count)> OpenAsync(string kind)
    {
        if (kind == "sqlite")
        {
            var options = new SqliteStoreOptions { Directory = _dir.Path };
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
        var pg = PostgreSqlGreylistStore.Open(PostgreSqlStores.Options(cluster, database), NullLogger.Instance);
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
    public async Task ExecuteAsync_OneDecisionThrows_OnlyThatCallerFails(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        var tasks = Enumerable.Range(0, 50).Select(i => Task.Run(async () =>
            await Run(store, tx =>
            {
                tx.SaveTriplet($"k{i}", new TripletRecord(i, i));
                if (i == 7)
                {
                    throw new InvalidOperationException("decision 7 fails");
                }
                return i;
            }))).ToList();
        foreach (var (task, i) in tasks.Select((t, i) => (t, i)))
        {
            if (i == 7)
            {
                await Assert.ThrowsAsync<InvalidOperationException>(() => task);
            }
            else
            {
                Assert.Equal(i, await task);
            }
        }
        Assert.Equal(49, await count("SELECT count(*) FROM triplets"));
        Assert.Equal(0, await count("SELECT count(*) FROM triplets WHERE key = 'k7'"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task CleanAsync_DeletesExpiredEntries_KeepsFreshOnes(string kind)
    {
        var (store, count) = await OpenAsync(kind);
        const long now = 100 * 86400;
        await Run(store, tx =>
        {
            tx.SaveTriplet("old", new TripletRecord(1, 2));                      // past max-age
            tx.SaveTriplet("never-retried", new TripletRecord(now - 5 * 86400, now - 5 * 86400)); // past the retry window
            tx.SaveTriplet("fresh", new TripletRecord(now - 1000, now - 10));
            tx.SaveClient("old", new ClientRecord(5, 2));
            tx.SaveClient("fresh", new ClientRecord(5, now - 10));
            return 0;
        });
        MaintenanceReport report = await store.CleanAsync(new MaintenancePolicy(now, 35 * 86400, 300, 2 * 86400), CancellationToken.None);
        Assert.Equal(new MaintenanceReport(3, 1, 2, 1), report);
        Assert.Equal(1, await count("SELECT count(*) FROM triplets WHERE key = 'fresh'"));
        Assert.Equal(1, await count("SELECT count(*) FROM triplets"));
        Assert.Equal(1, await count("SELECT count(*) FROM clients"));
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

/// <summary>Options for a store on a database of the test cluster, over its Unix socket.</summary>
internal static class PostgreSqlStores
{
    public static PostgreSqlStoreOptions Options(PostgresCluster cluster, string database, TimeSpan? timeout = null, int stepRows = 2000)
    {
        NpgsqlConnectionStringBuilder builder = PostgreSqlConnectionString.Parse(cluster.SocketUri(database), out string error)
            ?? throw new InvalidOperationException(error);
        return new PostgreSqlStoreOptions
        {
            ConnectionString = builder.ConnectionString,
            Description = PostgreSqlConnectionString.Describe(builder),
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            MaintenanceStepRows = stepRows,
        };
    }
}
