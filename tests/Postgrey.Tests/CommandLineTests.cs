using System.CommandLine;
using System.Text.RegularExpressions;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Server;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>postgrey's flag table: every name, alias and default.</summary>
public sealed partial class CommandLineTests : IDisposable
{
    private const string DebianPostgrey = "/usr/sbin/postgrey";
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static (PostgreyOptions? Options, IReadOnlyList<string> Errors) Map(params string[] args)
    {
        var commandLine = new PostgreyCommandLine();
        var parsed = commandLine.Parse(args);
        var errors = commandLine.Errors(parsed);
        return (errors.Count > 0 ? null : OptionsMapper.Map(commandLine, parsed), errors);
    }

    private static string Help()
    {
        using var output = new StringWriter();
        Assert.Equal(0, new PostgreyCommandLine().WriteHelp(output));
        return output.ToString();
    }

    /// <summary>The help line of <paramref name="option"/>: its names, then its description.</summary>
    private static string HelpLine(string help, Option option) =>
        Assert.Single(help.Split('\n'), line => line.TrimStart().Split(", ").Any(n => n == option.Name || n.StartsWith(option.Name + " ", StringComparison.Ordinal)));

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
            Assert.Equal(["--" + name + "=1"], commandLine.AsGetoptReadsThem(["-" + name + "=1"]));
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

    /// <summary>Each entry of postgrey's GetOptions call in Debian's /usr/sbin/postgrey, e.g.
    /// <c>'syslogfacility|syslog-facility|facility=s'</c>: every name must be ours, taking a value
    /// as postgrey's does (<c>=</c> required, <c>:</c> optional, none a switch).</summary>
    [Fact]
    public void EveryFlagOfDebiansPostgrey_IsAcceptedAndTakesAValueAsThere()
    {
        Requires.Program(DebianPostgrey, "postgrey");
        string source = File.ReadAllText(DebianPostgrey);
        string call = GetOptionsCall().Match(source).Groups[1].Value;
        var specs = OptionSpec().Matches(call).Select(m => (Names: m.Groups[1].Value.Split('|'), Kind: m.Groups[2].Value)).ToList();
        Assert.True(specs.Count >= 30, $"only {specs.Count} flags found in {DebianPostgrey}'s GetOptions call");

        var commandLine = new PostgreyCommandLine();
        var missing = new List<string>();
        foreach (var (names, kind) in specs)
        {
            foreach (string name in names)
            {
                string spelled = name.Length == 1 ? "-" + name : "--" + name;
                Option? option = commandLine.Options.FirstOrDefault(o => o.Name == spelled || o.Aliases.Contains(spelled));
                if (option is null)
                {
                    missing.Add(spelled);
                    continue;
                }
                ArgumentArity arity = option.Arity;
                switch (kind)
                {
                    case "":
                        Assert.True(arity.MaximumNumberOfValues == 0, $"{spelled} is a switch in postgrey");
                        break;
                    case ":":
                        Assert.True(arity is { MinimumNumberOfValues: 0, MaximumNumberOfValues: 1 }, $"{spelled} takes an optional value in postgrey");
                        break;
                    default:
                        Assert.True(arity.MaximumNumberOfValues >= 1, $"{spelled} takes a value in postgrey");
                        break;
                }
            }
        }
        Assert.Empty(missing);
    }

    /// <summary>Every option with a default shows it in --help, and what it shows is the value the
    /// options get when the flag is absent: help and options come from one source.</summary>
    [Fact]
    public void Help_ShowsEveryDefault_AsTheValueTheOptionsGet()
    {
        string help = Help();
        var commandLine = new PostgreyCommandLine();
        ParseResult parsed = commandLine.Parse(["--inet=10023"]);
        int withDefault = 0;
        foreach (Option option in commandLine.Options)
        {
            if (!option.HasDefaultValue || option.Arity.MaximumNumberOfValues == 0)
            {
                // A switch is off unless given.
                Assert.DoesNotContain("[default: ", HelpLine(help, option), StringComparison.Ordinal);
                continue;
            }
            withDefault++;
            object? value = parsed.RootCommandResult.GetResult(option)!.GetValueOrDefault<object>();
            Assert.Contains($"[default: {value}]", HelpLine(help, option), StringComparison.Ordinal);
        }
        Assert.True(withDefault >= 19, $"only {withDefault} options have a default");
    }

    /// <summary>The defaults postgrey 1.37's --help states, shown by ours.</summary>
    [Theory]
    [InlineData("--socketmode", "0666")]
    [InlineData("--dbdir", "/var/lib/postgrey")]
    [InlineData("--delay", "300")]
    [InlineData("--max-age", "35")]
    [InlineData("--retry-window", "2")]
    [InlineData("--greylist-action", "DEFER_IF_PERMIT")]
    [InlineData("--ipv4cidr", "24")]
    [InlineData("--ipv6cidr", "64")]
    [InlineData("--auto-whitelist-clients", "5")]
    [InlineData("--syslogfacility", "mail")]
    [InlineData("--greylist-text", GreylistOptions.DefaultGreylistText)]
    [InlineData("--x-greylist-header", GreylistOptions.DefaultXGreylistHeader)]
    public void Help_ShowsPostgreysDefault(string flag, string expected)
    {
        Option option = new PostgreyCommandLine().Options.Single(o => o.Name == flag);
        Assert.Contains($"[default: {expected}]", HelpLine(Help(), option), StringComparison.Ordinal);
    }

    /// <summary>The README's flag tables: a row for every option, and its default as --help shows
    /// it (except the host name, which is this machine's).</summary>
    [Fact]
    public void Readme_FlagTables_HaveEveryOptionWithItsDefault()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Postgrey.sln")))
        {
            dir = dir.Parent;
        }
        Assert.NotNull(dir);
        string readme = File.ReadAllText(Path.Combine(dir.FullName, "README.md"));
        string section = readme[readme.IndexOf("## Command line", StringComparison.Ordinal)..readme.IndexOf("## Whitelists", StringComparison.Ordinal)];
        var rows = section.Split('\n').Where(l => l.StartsWith("| `", StringComparison.Ordinal)).Select(l => l.Split(" | ")).ToList();

        var commandLine = new PostgreyCommandLine();
        ParseResult parsed = commandLine.Parse(["--inet=10023"]);
        foreach (Option option in commandLine.Options)
        {
            var names = option.Aliases.Append(option.Name).Select(n => new Regex("(?<![a-z0-9-])" + Regex.Escape(n) + "(?![a-z0-9-])"));
            var matching = rows.Where(r => names.Any(n => n.IsMatch(r[0]))).ToList();
            Assert.True(matching.Count == 1, $"{option.Name}: {matching.Count} rows in the README's flag tables");
            string[] row = matching[0];
            if (option.HasDefaultValue && option.Arity.MaximumNumberOfValues > 0 && option != commandLine.Hostname)
            {
                object? value = parsed.RootCommandResult.GetResult(option)!.GetValueOrDefault<object>();
                Assert.Contains(value!.ToString()!, row[1], StringComparison.OrdinalIgnoreCase);
            }
        }
    }

    [Fact]
    public void Help_ShowsEveryOptionOnce()
    {
        string help = Help();
        foreach (Option option in new PostgreyCommandLine().Options)
        {
            _ = HelpLine(help, option);
        }
    }

    [Theory]
    [InlineData(107, true)]
    [InlineData(108, false)]
    public void UnixPath_IsCheckedAgainstSunPathsLength(int bytes, bool accepted)
    {
        string path = "/tmp/" + new string('s', bytes - "/tmp/".Length);
        var (options, errors) = Map($"--unix={path}");
        if (accepted)
        {
            Assert.Empty(errors);
            Assert.Equal([path], options!.Server.Unix);
        }
        else
        {
            Assert.Equal([$"--unix={path}: longer than 107 bytes"], errors);
        }
    }

    [Fact]
    public void UnixPath_IsMeasuredInBytesOfItsFullPath()
    {
        string path = "/tmp/" + new string('\u00e9', 52); // 57 characters, 109 bytes in UTF-8
        Assert.Equal([$"--unix={path}: longer than 107 bytes"], Map($"--unix={path}").Errors);
        string relative = new string('r', 100); // short, but not once the working directory is prepended
        Assert.Equal([$"--unix={relative}: longer than 107 bytes"], Map($"--unix={relative}").Errors);
    }

    [Fact]
    public async Task UnixPath_TooLong_ExitsBeforeOpeningTheDatabase()
    {
        string path = _dir.File(new string('s', 120));
        string dbdir = _dir.File("db");
        var (code, output) = await PostgreyProcess.RunAsync($"--unix={path}", $"--dbdir={dbdir}", "--delay=x");
        Assert.Equal(1, code);
        Assert.Contains($"ERROR: --unix={path}: longer than 107 bytes", output.Split('\n'));
        Assert.Contains("ERROR: --delay=x: a whole number is expected", output.Split('\n'));
        Assert.False(Directory.Exists(dbdir), "the database directory was created");
    }

    [Fact]
    public void Transport_DefaultsToEpollOnLinuxAndSocketsElsewhere()
    {
        Assert.Equal(OperatingSystem.IsLinux() ? PolicyTransport.Epoll : PolicyTransport.Sockets, Ok("--inet=10023").Server.Transport);
    }

    [Theory]
    [InlineData(PolicyTransport.Sockets, "--transport=sockets")]
    [InlineData(PolicyTransport.Sockets, "--transport=SOCKETS")]
    [InlineData(PolicyTransport.Sockets, "-transport", "sockets")]
    public void Transport_IsMapped(PolicyTransport expected, params string[] flag) =>
        Assert.Equal(expected, Ok(["--inet=10023", .. flag]).Server.Transport);

    [Fact]
    public void Transport_Epoll_IsTakenOnLinuxOnly()
    {
        var (options, errors) = Map("--inet=10023", "--transport=epoll");
        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(PolicyTransport.Epoll, options!.Server.Transport);
        }
        else
        {
            Assert.Equal(["--transport=epoll: needs Linux"], errors);
        }
    }

    [Theory]
    [InlineData("Text")]
    [InlineData("Json", "--log-format=json")]
    [InlineData("Text", "--log-format", "text")]
    public void LogFormat_IsMapped(string expected, params string[] flag) =>
        Assert.Equal(Enum.Parse<LogFormat>(expected), Ok(["--inet=10023", .. flag]).Logging.Format);

    [Theory]
    [InlineData("--pidfile=", "--pidfile needs a path")]
    [InlineData("--dbdir=", "--dbdir needs a path")]
    [InlineData("--unix=", "--unix needs a path")]
    [InlineData("--transport=io_uring", "--transport=io_uring: 'epoll' or 'sockets' is expected")]
    [InlineData("--log-format=xml", "--log-format=xml: 'text' or 'json' is expected")]
    [InlineData("--syslog-facility=mial", "--syslogfacility=mial: one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0, local1, local2, local3, local4, local5, local6, local7 is expected")]
    [InlineData("--max-connections=0", "--max-connections=0: must be between 1 and 1000000")]
    [InlineData("--delay=99999999999", "--delay=99999999999: must be between 0 and 2147483647")]
    [InlineData("--noaction", "don't know how to \"no-action\".")]
    public void MoreBadValues_AreReported(string flag, string error)
    {
        var (options, errors) = Map("--inet=10023", flag);
        Assert.Null(options);
        Assert.Equal([error], errors);
    }

    [Fact]
    public void ErrorsOfEveryKind_AreReportedTogether()
    {
        var (_, errors) = Map("--noaction", "--delay=x", "--unix=", "--transport=x", "--retry-window=1d", "--socketmode=9");
        Assert.Equal(
            [
                "--unix needs a path",
                "--socketmode=9: an octal mode such as 0660 is expected",
                "--delay=x: a whole number is expected",
                "--retry-window=1d: must be either a number of days or a number followed by 'h' for hours ('6h' for example)",
                "--transport=x: 'epoll' or 'sockets' is expected",
                "don't know how to \"no-action\".",
            ],
            errors);
    }

    [Theory]
    [InlineData("--greylist-text=")]
    [InlineData("--x-greylist-header=")]
    public void EmptyText_IsTheDefault_AsInPostgrey(string flag)
    {
        GreylistOptions g = Ok("--inet=10023", flag).Greylist;
        Assert.Equal(GreylistOptions.DefaultGreylistText, g.GreylistText);
        Assert.Equal(GreylistOptions.DefaultXGreylistHeader, g.XGreylistHeader);
    }

    [Fact]
    public void LookupBySubnetAndByHost_WarnsAndTakesByHost()
    {
        PostgreyOptions o = Ok("--inet=10023", "--lookup-by-subnet", "--lookup-by-host");
        Assert.True(o.Greylist.LookupByHost);
        Assert.Equal(["--lookup-by-subnet and --lookup-by-host both given: --lookup-by-host wins, as in postgrey"], o.CompatibilityWarnings);
    }

    [GeneratedRegex(@"GetOptions\(\\%opt,(.*?)\)\s*or\s+exit", RegexOptions.Singleline)]
    private static partial Regex GetOptionsCall();

    [GeneratedRegex(@"'([a-z0-9|-]+)([=:]?)[si]?@?'")]
    private static partial Regex OptionSpec();
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
