using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Identity.Tests;

/// <summary>The seam: the engine over a real SQLite store asks the resolver before the store.</summary>
public sealed class EngineIdentityTests : IDisposable
{
    private readonly TestDnsServer _dns = new();
    private readonly TempDirectory _dir = new();
    private readonly CapturingLoggerProvider _logs = new();
    private readonly LoggerFactory _loggerFactory;
    private readonly SqliteGreylistStore _store;
    private readonly IdentityResolver _resolver;
    private readonly GreylistEngine _engine;

    public EngineIdentityTests()
    {
        _dns.Txt("pool.test", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all");
        _loggerFactory = new LoggerFactory([_logs]);
        _store = SqliteGreylistStore.Open(new SqliteStoreOptions { Directory = _dir.Path }, NullLogger.Instance);
        _resolver = new IdentityResolver(
            new IdentityOptions { DnsServer = System.Net.IPAddress.Loopback, DnsPort = _dns.Port, Timeout = TimeSpan.FromSeconds(30) },
            TimeProvider.System, _loggerFactory.CreateLogger<IdentityResolver>());
        var warnings = new List<WhitelistWarning>();
        var whitelists = new WhitelistProvider(new WhitelistSet(
            new ClientWhitelist.Builder().Build(),
            new RecipientWhitelist.Builder().Build()));
        _engine = new GreylistEngine(_store, whitelists, new GreylistOptions { AllowTestTime = true, DelaySeconds = 300 }, TimeProvider.System, _loggerFactory, _resolver);
    }

    private ValueTask<string> Ask(string client, string sender, long time, string clientName = "unknown")
    {
        var parser = new PolicyRequestParser(new PolicyLimits());
        var request = new PolicyRequest();
        var buffer = new System.Buffers.ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(
            Requests.Policy(client, clientName, sender, "rcpt@example.org", testTime: time)));
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, request));
        return _engine.DecideAsync(request, CancellationToken.None);
    }

    private IEnumerable<string> Lines => _logs.Messages(GreylistEngine.DecisionLogCategory);

    [Fact]
    public async Task PoolSender_RetryingFromAnotherSlash16_PassesAfterTheDelay_AndTheLineSaysTheKeysForm()
    {
        const long T = 1_800_000_000;
        Assert.StartsWith("DEFER_IF_PERMIT", await Ask("198.51.100.10", "bounce-1@pool.test", T), StringComparison.Ordinal);
        Assert.StartsWith("DEFER_IF_PERMIT", await Ask("203.0.113.20", "bounce-1@pool.test", T + 60), StringComparison.Ordinal);
        Assert.StartsWith("PREPEND X-Greylist", await Ask("203.0.113.20", "bounce-1@pool.test", T + 301), StringComparison.Ordinal);

        Assert.Equal(
        [
            "action=greylist, reason=new, client_name=unknown, client_address=198.51.100.10, sender=bounce-1@pool.test, recipient=rcpt@example.org, key=spf:pool.test",
            "action=greylist, reason=early-retry (240s missing), client_name=unknown, client_address=203.0.113.20, sender=bounce-1@pool.test, recipient=rcpt@example.org, key=spf:pool.test",
            "action=pass, reason=triplet found, delay=301, client_name=unknown, client_address=203.0.113.20, sender=bounce-1@pool.test, recipient=rcpt@example.org, key=spf:pool.test",
        ], Lines);
    }

    [Fact]
    public async Task UnprovenSender_KeepsPostgreysSubnetKey()
    {
        const long T = 1_800_000_000;
        Assert.StartsWith("DEFER_IF_PERMIT", await Ask("192.0.2.10", "x@pool.test", T), StringComparison.Ordinal);
        Assert.StartsWith("DEFER_IF_PERMIT", await Ask("192.0.3.10", "x@pool.test", T + 400), StringComparison.Ordinal); // another /24: another triplet
        Assert.StartsWith("PREPEND", await Ask("192.0.2.99", "x@pool.test", T + 401), StringComparison.Ordinal); // same /24

        Assert.EndsWith(", key=subnet", Lines.Last(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task PendingLookup_HoldsUpOnlyItsOwnRequest()
    {
        _dns.Stall("slow.test").Txt("fast.test", "v=spf1 ip4:198.51.100.0/24 -all");

        ValueTask<string> slow = Ask("198.51.100.1", "x@slow.test", 1_800_000_000);
        string fast = await Ask("198.51.100.1", "x@fast.test", 1_800_000_000);

        Assert.StartsWith("DEFER_IF_PERMIT", fast, StringComparison.Ordinal);
        Assert.False(slow.IsCompleted, "the slow one waits for its DNS answer");
        _dns.Release();
        Assert.StartsWith("DEFER_IF_PERMIT", await slow, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        _resolver.Dispose();
        _store.Dispose();
        _loggerFactory.Dispose();
        _dir.Dispose();
        _dns.Dispose();
    }
}
