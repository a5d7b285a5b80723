using System.Net;
using Postgrey.Configuration;

namespace Postgrey.Tests;

/// <summary>--lookup-by-identity, --dns-server, --dns-timeout on the command line.</summary>
public sealed class IdentityFlagsTests
{
    private static (PostgreyOptions? Options, IReadOnlyList<string> Errors) Map(params string[] args)
    {
        var commandLine = new PostgreyCommandLine();
        var parsed = commandLine.Parse(args);
        var errors = commandLine.Errors(parsed);
        return (errors.Count > 0 ? null : OptionsMapper.Map(commandLine, parsed), errors);
    }

    [Fact]
    public void Off_ByDefault()
    {
        var (options, errors) = Map("--inet=10023");
        Assert.Empty(errors);
        Assert.Null(options!.Identity);
    }

    [Theory]
    [InlineData("127.0.0.1:5353", "127.0.0.1", 5353)]
    [InlineData("192.0.2.53", "192.0.2.53", 53)]
    [InlineData("[::1]:5353", "::1", 5353)]
    [InlineData("::1", "::1", 53)]
    [InlineData("[2001:db8::53]", "2001:db8::53", 53)]
    public void DnsServer_TakesAnAddressAndAPort(string value, string address, int port)
    {
        var (options, errors) = Map("--inet=10023", "--lookup-by-identity", $"--dns-server={value}", "--dns-timeout=750");
        Assert.Empty(errors);
        Assert.Equal(IPAddress.Parse(address), options!.Identity!.DnsServer);
        Assert.Equal(port, options.Identity.DnsPort);
        Assert.Equal(TimeSpan.FromMilliseconds(750), options.Identity.Timeout);
    }

    [Fact]
    public void Defaults_TheSystemsResolver_AndTwoSeconds()
    {
        var (options, errors) = Map("--inet=10023", "--lookup-by-identity");
        Assert.Empty(errors);
        Assert.Null(options!.Identity!.DnsServer);
        Assert.Equal(TimeSpan.FromSeconds(2), options.Identity.Timeout);
    }

    [Theory]
    [InlineData("--dns-server=dns.example.org", "--dns-server=dns.example.org: an IP address is expected")]
    [InlineData("--dns-server=127.0.0.1:0", "--dns-server=127.0.0.1:0: an IP address is expected")]
    [InlineData("--dns-server=[::1", "--dns-server=[::1: an IP address is expected")]
    [InlineData("--dns-timeout=5", "--dns-timeout=5: must be between 10 and 60000")]
    public void BadValues_AreOneLineErrors(string flag, string error)
    {
        var (_, errors) = Map("--inet=10023", "--lookup-by-identity", flag);
        Assert.Contains(errors, e => e.StartsWith(error, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("--dns-server=127.0.0.1")]
    [InlineData("--dns-timeout=500")]
    public void DnsFlags_NeedTheMode(string flag)
    {
        var (_, errors) = Map("--inet=10023", flag);
        Assert.Contains("--dns-server and --dns-timeout need --lookup-by-identity", errors);
    }
}
