using Postgrey.Configuration;
using Postgrey.Core.Greylisting;

namespace Postgrey.Tests;

/// <summary>postgrey's flag table: every name, alias and default.</summary>
public class CommandLineTests
{
    private static (PostgreyOptions? Options, IReadOnlyList<string> Errors) Map(params string[] args)
    {
        var commandLine = new PostgreyCommandLine();
        var parsed = commandLine.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            return (null, parsed.Errors.Select(e => e.Message).ToList());
        }
        var options = OptionsMapper.Map(commandLine.Read(parsed), out var errors);
        return (options, errors);
    }

    private static PostgreyOptions Ok(params string[] args)
    {
        var (options, errors) = Map(args);
        Assert.Empty(errors);
        return options!;
    }

    /// <summary>Every name in postgrey 1.37's GetOptions call (Debian's /usr/sbin/postgrey).</summary>
    public static TheoryData<string> PostgreyNames =>
    [
        "help", "h", "man", "version", "noaction", "no-action", "n", "verbose", "v", "quiet", "q", "daemonize", "d",
        "unix", "u", "inet", "i", "socketmode", "user", "group", "dbdir", "pidfile", "delay", "max-age",
        "lookup-by-subnet", "lookup-by-host", "ipv4cidr", "ipv6cidr", "auto-whitelist-clients",
        "whitelist-clients", "whitelist-recipients", "syslogfacility", "syslog-facility", "facility",
        "retry-window", "greylist-action", "greylist-text", "privacy", "hostname", "exim", "listen-queue-size",
        "x-greylist-header",
    ];

    [Theory]
    [MemberData(nameof(PostgreyNames))]
    public void EveryPostgreyFlag_IsAccepted(string name)
    {
        var commandLine = new PostgreyCommandLine();
        var aliases = commandLine.Options.SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
        Assert.Contains(name.Length == 1 ? "-" + name : "--" + name, aliases);
        if (name.Length > 1)
        {
            // Getopt::Long also takes single-dash long names.
            Assert.Equal(["--" + name + "=1"], commandLine.WithDoubleDash(["-" + name + "=1"]));
        }
    }

    [Fact]
    public void Defaults_AreThoseOfPostgrey()
    {
        PostgreyOptions o = Ok("--inet=10023");
        GreylistOptions g = o.Greylist;
        Assert.Equal(300, g.DelaySeconds);
        Assert.Equal(35 * 86400, g.MaxAgeSeconds);
        Assert.Equal(2 * 86400, g.RetryWindowSeconds);
        Assert.Equal("DEFER_IF_PERMIT", g.GreylistAction);
        Assert.Equal("Greylisted, see http://postgrey.schweikert.ch/help/%r.html", g.GreylistText);
        Assert.Equal("X-Greylist: delayed %t seconds by postgrey-%v at %h; %d", g.XGreylistHeader);
        Assert.False(g.LookupByHost);
        Assert.Equal(24, g.IPv4Cidr);
        Assert.Equal(64, g.IPv6Cidr);
        Assert.Equal(5, g.AutoWhitelistClients);
        Assert.False(g.Privacy);
        Assert.Equal(System.Net.Dns.GetHostName(), g.Hostname);
        Assert.False(g.AllowTestTime);
        Assert.Equal("/var/lib/postgrey", o.Storage.Directory);
        Assert.Equal((UnixFileMode)Convert.ToInt32("666", 8), o.Server.SocketMode);
        Assert.Null(o.Server.ListenQueueSize);
        Assert.False(o.Server.Exim);
        Assert.Null(o.WhitelistClientFiles);
        Assert.Null(o.WhitelistRecipientFiles);
        Assert.Equal(Verbosity.Normal, o.Logging.Verbosity);
        Assert.Equal(2, o.Logging.SyslogFacility); // mail
        Assert.False(o.Logging.Syslog);
        Assert.Equal("/dev/log", o.Logging.SyslogSocket);
        Assert.False(o.Service.Daemonize);
        Assert.Null(o.Service.PidFile);
        Assert.Null(o.Service.User);
        Assert.Equal(TimeSpan.FromHours(1), o.MaintenanceInterval);
        Assert.False(o.Storage.SyncEveryCommit);
    }

    [Theory]
    [InlineData("--delay=60")]
    [InlineData("--delay", "60")]
    [InlineData("-delay", "60")]
    [InlineData("-delay=60")]
    public void Values_AreTakenInEveryGetoptSpelling(params string[] delay)
    {
        Assert.Equal(60, Ok(["--inet=10023", .. delay]).Greylist.DelaySeconds);
    }

    [Fact]
    public void EveryFlag_IsMapped()
    {
        PostgreyOptions o = Ok(
            "-inet", "127.0.0.1:10025", "--unix=/tmp/x.sock", "--socketmode=0660", "--dbdir=/tmp/db", "--delay=0",
            "--max-age=0", "--retry-window=6h", "--greylist-action=451", "--greylist-text=go away %s",
            "--lookup-by-host", "--ipv4cidr=16", "--ipv6cidr=48", "--auto-whitelist-clients=0",
            "--whitelist-clients=/a", "--whitelist-clients=/b", "--whitelist-recipients=/c", "--privacy",
            "--hostname=mx9", "--exim", "--listen-queue-size=50", "--x-greylist-header=X-G: %t", "-v",
            "--syslog-facility=local0", "--allow-test-time", "--max-connections=7", "--maintenance-interval=60", "--db-sync=full");
        Assert.Equal("127.0.0.1:10025", Assert.Single(o.Server.Inet).ToString());
        Assert.Equal(["/tmp/x.sock"], o.Server.Unix);
        Assert.Equal((UnixFileMode)Convert.ToInt32("660", 8), o.Server.SocketMode);
        Assert.Equal("/tmp/db", o.Storage.Directory);
        Assert.Equal(0, o.Greylist.DelaySeconds);         // zero means zero
        Assert.Equal(0, o.Greylist.MaxAgeSeconds);
        Assert.Equal(6 * 3600, o.Greylist.RetryWindowSeconds);
        Assert.Equal("451", o.Greylist.GreylistAction);
        Assert.Equal("go away %s", o.Greylist.GreylistText);
        Assert.True(o.Greylist.LookupByHost);
        Assert.Equal(16, o.Greylist.IPv4Cidr);
        Assert.Equal(48, o.Greylist.IPv6Cidr);
        Assert.Equal(0, o.Greylist.AutoWhitelistClients);
        Assert.Equal(["/a", "/b"], o.WhitelistClientFiles!);
        Assert.Equal(["/c"], o.WhitelistRecipientFiles!);
        Assert.True(o.Greylist.Privacy);
        Assert.Equal("mx9", o.Greylist.Hostname);
        Assert.True(o.Server.Exim);
        Assert.Equal(50, o.Server.ListenQueueSize);
        Assert.Equal("X-G: %t", o.Greylist.XGreylistHeader);
        Assert.Equal(Verbosity.Verbose, o.Logging.Verbosity);
        Assert.Equal(16, o.Logging.SyslogFacility); // local0
        Assert.True(o.Greylist.AllowTestTime);
        Assert.Equal(7, o.Server.MaxConnections);
        Assert.Equal(TimeSpan.FromSeconds(60), o.MaintenanceInterval);
        Assert.True(o.Storage.SyncEveryCommit);
    }

    [Fact]
    public void BarePort_BindsBothLoopbacks()
    {
        var inet = Ok("--inet=10023").Server.Inet;
        Assert.Equal(["127.0.0.1:10023", "[::1]:10023"], inet.Select(e => e.ToString()));
    }

    [Fact]
    public void BracketedIPv6_IsAccepted()
    {
        Assert.Equal("[::1]:10023", Assert.Single(Ok("--inet=[::1]:10023").Server.Inet).ToString());
    }

    [Fact]
    public void InetAndUnix_BothListen()
    {
        var o = Ok("--inet=10023", "--unix=/tmp/p.sock");
        Assert.NotEmpty(o.Server.Inet);
        Assert.Single(o.Server.Unix);
    }

    [Theory]
    [InlineData("--auto-whitelist-clients", 5)]
    [InlineData("--auto-whitelist-clients=0", 0)]
    [InlineData("--auto-whitelist-clients=12", 12)]
    public void AutoWhitelistClients_ValueIsOptional(string flag, int expected)
    {
        Assert.Equal(expected, Ok("--inet=10023", flag).Greylist.AutoWhitelistClients);
    }

    [Theory]
    [InlineData("-q", "Quiet")]
    [InlineData("--quiet", "Quiet")]
    [InlineData("-v", "Verbose")]
    public void Verbosity_Flags(string flag, string expected)
    {
        Assert.Equal(expected, Ok("--inet=10023", flag).Logging.Verbosity.ToString());
    }

    [Theory]
    [InlineData("--delay=abc", "--delay=abc: a whole number is expected")]
    [InlineData("--delay=-1", "--delay=-1: must be between 0 and 2147483647")]
    [InlineData("--retry-window=3x", "--retry-window=3x: must be either a number of days or a number followed by 'h' for hours ('6h' for example)")]
    [InlineData("--ipv4cidr=33", "--ipv4cidr=33: must be between 0 and 32")]
    [InlineData("--socketmode=rw", "--socketmode=rw: an octal mode such as 0660 is expected")]
    [InlineData("--inet=localhost:http", "--inet=localhost:http: invalid port 'http'")]
    [InlineData("--db-sync=sometimes", "--db-sync=sometimes: 'normal' or 'full' is expected")]
    public void BadValues_AreReported(string flag, string error)
    {
        var (options, errors) = Map("--inet=10023", flag);
        Assert.Null(options);
        Assert.Contains(error, errors);
    }

    [Fact]
    public void NoListener_IsAnError()
    {
        var (_, errors) = Map("--delay=10");
        Assert.Equal(["--unix or --inet must be specified"], errors);
    }

    [Fact]
    public void AllErrors_AreReportedTogether()
    {
        var (_, errors) = Map("--delay=x", "--max-age=y");
        Assert.Equal(3, errors.Count);
    }

    [Fact]
    public void UnknownFlag_IsAParseError()
    {
        var (_, errors) = Map("--inet=10023", "--no-such-flag");
        Assert.NotEmpty(errors);
    }

    [Fact]
    public void ValueStartingWithAt_IsNotAResponseFile()
    {
        Assert.Equal("@home", Ok("--inet=10023", "--hostname", "@home").Greylist.Hostname);
    }
}

public class NetServerLogFormatterTests
{
    [Theory]
    [InlineData("action=pass, sender=a@b", "action=pass, sender=a@b")]
    [InlineData("sender=jörg@exämple.net", "sender=j%C3%B6rg@ex%C3%A4mple.net")]
    [InlineData("tab\there", "tab%09here")]
    [InlineData("cr\rlf", "cr%0Dlf")]
    [InlineData("esc\u001b[31m", "esc%1B[31m")]
    [InlineData("emoji \U0001F600", "emoji %F0%9F%98%80")]
    [InlineData("100% sure\n", "100% sure\n")]
    public void Escape_WritesBytesOutsidePrintableAsciiAsPercentHex(string text, string expected)
    {
        Assert.Equal(expected, Postgrey.Logging.NetServerLogFormatter.Escape(text));
    }
}
