using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.PostgreSql.Tests;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Core.Tests.Greylisting;

/// <summary>The store an engine test runs on: the suite runs on each.</summary>
public enum StoreKind
{
    Sqlite,
    PostgreSql,
}

/// <summary>
/// The engine over a real store with a fake clock: SQLite in a temp directory, or a fresh
/// database of a private PostgreSQL cluster (skipped, or failed under CI, without PostgreSQL).
/// </summary>
internal sealed class EngineHarness : IDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 11, 28, 3, 20, 0, TimeSpan.Zero);

    private readonly TempDirectory _dir;
    private readonly LoggerFactory _loggerFactory;

    private EngineHarness(TempDirectory dir, IGreylistStore store, GreylistOptions? options, string clientWhitelist, string recipientWhitelist)
    {
        _dir = dir;
        Store = store;
        Options = options ?? new GreylistOptions { Hostname = "mx1.example.org" };
        Time.SetUtcNow(Start);
        Time.SetLocalTimeZone(TimeZoneInfo.Utc);
        _loggerFactory = new LoggerFactory([Logs]);
        var warnings = new List<WhitelistWarning>();
        Whitelists = new WhitelistProvider(new WhitelistSet(
            new ClientWhitelist.Builder().Add(new StringReader(clientWhitelist), "clients", warnings).Build(),
            new RecipientWhitelist.Builder().Add(new StringReader(recipientWhitelist), "recipients", warnings).Build()));
        Engine = new GreylistEngine(Store, Whitelists, Options, Time, _loggerFactory);
    }

    /// <summary>A harness on a fresh store of <paramref name="kind"/>; <paramref name="cluster"/> is started (on first use) only for PostgreSQL.</summary>
    public static async Task<EngineHarness> CreateAsync(
        StoreKind kind,
        PostgresCluster cluster,
        GreylistOptions? options = null,
        string clientWhitelist = "",
        string recipientWhitelist = "",
        TimeSpan? busyTimeout = null)
    {
        var dir = new TempDirectory();
        try
        {
            IGreylistStore store = kind == StoreKind.Sqlite
                ? SqliteGreylistStore.Open(new SqliteStoreOptions { Directory = dir.Path, BusyTimeout = busyTimeout ?? TimeSpan.FromSeconds(5) }, NullLogger.Instance)
                : PostgreSqlGreylistStore.Open(PostgreSqlStores.Options(cluster, await cluster.CreateDatabaseAsync()), NullLogger.Instance);
            return new EngineHarness(dir, store, options, clientWhitelist, recipientWhitelist);
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    public GreylistOptions Options { get; }
    public FakeTimeProvider Time { get; } = new();
    public CapturingLoggerProvider Logs { get; } = new();
    public IGreylistStore Store { get; }
    public WhitelistProvider Whitelists { get; }
    public GreylistEngine Engine { get; }

    /// <summary>The SQLite file, for the tests that open it beside the store (SQLite only).</summary>
    public string DatabasePath => ((SqliteGreylistStore)Store).DatabasePath;

    public IEnumerable<string> DecisionLines => Logs.Messages(GreylistEngine.DecisionLogCategory);

    public string LastLine => Logs.Entries[^1].Message;

    public void Advance(int seconds) => Time.Advance(TimeSpan.FromSeconds(seconds));

    public Task<string> AskAsync(string text)
    {
        var parser = new PolicyRequestParser(new PolicyLimits());
        var request = new PolicyRequest();
        var buffer = new System.Buffers.ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(text));
        var status = parser.TryRead(ref buffer, request);
        Assert.Equal(PolicyReadStatus.Request, status);
        return Engine.DecideAsync(request, CancellationToken.None).AsTask();
    }

    public Task<string> AskAsync(
        string clientAddress = "192.0.2.7",
        string clientName = "mx.example.net",
        string sender = "a@example.net",
        string recipient = "b@example.org",
        string? instance = null,
        long? testTime = null,
        string? queueId = null,
        bool etrnDomain = true) =>
        AskAsync(Requests.Policy(clientAddress, clientName, sender, recipient, instance, testTime, queueId, etrnDomain));

    public void Dispose()
    {
        ((IDisposable)Store).Dispose();
        _loggerFactory.Dispose();
        _dir.Dispose();
    }
}
