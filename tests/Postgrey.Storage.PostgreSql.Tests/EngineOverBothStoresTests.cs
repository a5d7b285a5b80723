using System.Buffers;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// postgrey's decisions, the real engine with a fake clock, on SQLite and on PostgreSQL: the
/// same answers from both stores (a start on running the engine suite over both).
/// </summary>
public sealed class EngineOverBothStoresTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private readonly TempDirectory _dir = new();
    private readonly List<IDisposable> _disposables = [];
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 28, 3, 20, 0, TimeSpan.Zero));

    public static TheoryData<string> Stores => new() { "sqlite", "postgresql" };

    private async Task<GreylistEngine> EngineAsync(string kind, GreylistOptions? options = null)
    {
        IGreylistStore store;
        if (kind == "sqlite")
        {
            var sqlite = SqliteGreylistStore.Open(new SqliteStoreOptions { Directory = _dir.Path }, NullLogger.Instance);
            _disposables.Add(sqlite);
            store = sqlite;
        }
        else
        {
            var pg = PostgreSqlGreylistStore.Open(PostgreSqlStores.Options(cluster, await cluster.CreateDatabaseAsync()), NullLogger.Instance);
            _disposables.Add(pg);
            store = pg;
        }
        var factory = new LoggerFactory();
        _disposables.Add(factory);
        return new GreylistEngine(store, new WhitelistProvider(WhitelistSet.Empty), options ?? new GreylistOptions { Hostname = "mx1.example.org" }, _time, factory);
    }

    private static async Task<string> AskAsync(GreylistEngine engine, string sender = "a@example.net", string clientAddress = "192.0.2.7")
    {
        var parser = new PolicyRequestParser(new PolicyLimits());
        var request = new PolicyRequest();
        var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Requests.Policy(clientAddress: clientAddress, sender: sender)));
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, request));
        return await engine.DecideAsync(request, CancellationToken.None);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task DecideAsync_NewTriplet_GreylistedUntilTheDelay_ThenPasses(string kind)
    {
        GreylistEngine engine = await EngineAsync(kind);
        Assert.Equal(Greylisted, await AskAsync(engine));
        _time.Advance(TimeSpan.FromSeconds(299));
        Assert.Equal(Greylisted, await AskAsync(engine));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.StartsWith("PREPEND X-Greylist: delayed 300 seconds by postgrey-", await AskAsync(engine), StringComparison.Ordinal);
        _time.Advance(TimeSpan.FromSeconds(3600));
        Assert.Equal("DUNNO", await AskAsync(engine)); // passed before: no header again
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task DecideAsync_RetryAfterTheRetryWindow_StartsOver(string kind)
    {
        GreylistEngine engine = await EngineAsync(kind);
        Assert.Equal(Greylisted, await AskAsync(engine));
        _time.Advance(TimeSpan.FromDays(3));
        Assert.Equal(Greylisted, await AskAsync(engine));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task DecideAsync_ClientPassedEnoughTriplets_IsAutoWhitelisted(string kind)
    {
        GreylistEngine engine = await EngineAsync(kind, new GreylistOptions { Hostname = "mx1.example.org", AutoWhitelistClients = 2 });
        foreach (string sender in new[] { "one@example.net", "two@example.net" })
        {
            Assert.Equal(Greylisted, await AskAsync(engine, sender));
            _time.Advance(TimeSpan.FromSeconds(301));
            Assert.StartsWith("PREPEND", await AskAsync(engine, sender), StringComparison.Ordinal);
            _time.Advance(TimeSpan.FromSeconds(3600)); // the count moves at most once an hour
        }
        Assert.Equal("DUNNO", await AskAsync(engine, "three@example.net"));
        Assert.Equal(Greylisted, await AskAsync(engine, "three@example.net", clientAddress: "198.51.100.7"));
    }

    public void Dispose()
    {
        foreach (IDisposable d in _disposables)
        {
            d.Dispose();
        }
        _dir.Dispose();
    }
}
