using System.Net;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>
/// --lookup-by-identity in the real service (the built postgrey.dll, real sockets, SQLite),
/// pointed with --dns-server at a real DNS server on 127.0.0.1 that this test starts.
/// </summary>
public sealed class IdentityServiceTests : IDisposable
{
    private const long T = 1_800_000_000;
    private readonly TempDirectory _dir = new();
    private readonly TestDnsServer _dns = new();

    public IdentityServiceTests()
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "# none\n");
        // A provider whose outbound hosts sit in two /16s (and a /48 of IPv6).
        _dns.Txt("pool.test", "v=spf1 include:_spf.pool.test -all")
            .Txt("_spf.pool.test", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 ip6:2001:db8:aa::/48 -all")
            .Txt("open.test", "v=spf1 +all");
    }

    private string[] Args(int port, params string[] extra) =>
    [
        $"--inet=127.0.0.1:{port}",
        $"--dbdir={_dir.File("db")}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        "--allow-test-time",
        "--delay=300",
        .. extra,
    ];

    private static async Task<string?> AskAsync(int port, string client, string sender, long time, string clientName = "unknown")
    {
        await using var connection = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return await connection.AskAsync(Requests.Policy(client, clientName, sender, "rcpt@example.org", testTime: time));
    }

    [Fact]
    public async Task PoolSender_RetryingFromAnotherSlash16_PassesAfterTheDelay()
    {
        int port = PolicyServerProcess.FreePort();
        await using var service = PostgreyProcess.Start(Args(port, "--lookup-by-identity", $"--dns-server={_dns.Endpoint}", "--dns-timeout=3000"));
        await service.WaitForTcpAsync();

        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "198.51.100.10", "bounce-7@pool.test", T));
        // Postfix's first retry, from a host in another /16 that the provider's SPF names.
        Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", await AskAsync(port, "203.0.113.20", "bounce-7@pool.test", T + 400));

        // A forged sender of an open policy (+all) and an unproven one keep the subnet key.
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "192.0.2.5", "x@open.test", T));
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "192.0.3.5", "x@open.test", T + 400));

        string line = await service.WaitForLineAsync(l => l.Contains("client_address=203.0.113.20", StringComparison.Ordinal));
        Assert.EndsWith("action=pass, reason=triplet found, delay=400, client_name=unknown, client_address=203.0.113.20, sender=bounce-7@pool.test, recipient=rcpt@example.org, key=spf:pool.test", line, StringComparison.Ordinal);
        await service.WaitForLineAsync(l => l.EndsWith("client_address=192.0.3.5, sender=x@open.test, recipient=rcpt@example.org, key=subnet", StringComparison.Ordinal));
        await service.WaitForLineAsync(l => l.Contains("SPF of open.test: pass that proves nothing (open.test: +all)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task DefaultMode_KeysOnTheSubnet_AndItsLinesAreUnchanged()
    {
        int port = PolicyServerProcess.FreePort();
        await using var service = PostgreyProcess.Start(Args(port));
        await service.WaitForTcpAsync();

        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "198.51.100.10", "bounce-7@pool.test", T));
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "203.0.113.20", "bounce-7@pool.test", T + 400));

        string line = await service.WaitForLineAsync(l => l.Contains("client_address=203.0.113.20", StringComparison.Ordinal));
        Assert.EndsWith("action=greylist, reason=new, client_name=unknown, client_address=203.0.113.20, sender=bounce-7@pool.test, recipient=rcpt@example.org", line, StringComparison.Ordinal);
        Assert.Equal(0, _dns.Queries);
    }

    [Fact]
    public async Task DnsServerThatNeverAnswers_FallsBackToTheSubnet_AndTheServiceKeepsAnswering()
    {
        using var silent = new BrokenDnsServer(garbage: false);
        int port = PolicyServerProcess.FreePort();
        await using var service = PostgreyProcess.Start(Args(port, "--lookup-by-identity", $"--dns-server={silent.Endpoint}", "--dns-timeout=300"));
        await service.WaitForTcpAsync();

        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, "198.51.100.10", "bounce-7@pool.test", T));
        Assert.StartsWith("PREPEND", await AskAsync(port, "198.51.100.99", "bounce-7@pool.test", T + 400)); // same /24
        await service.WaitForLineAsync(l => l.EndsWith("client_address=198.51.100.99, sender=bounce-7@pool.test, recipient=rcpt@example.org, key=subnet", StringComparison.Ordinal));
        await service.WaitForLineAsync(l => l.Contains("SPF of pool.test: timeout", StringComparison.Ordinal));
    }

    public void Dispose()
    {
        _dns.Dispose();
        _dir.Dispose();
    }
}
