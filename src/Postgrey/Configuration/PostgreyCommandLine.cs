using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Parsing;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using Postgrey.Core.Greylisting;
using Postgrey.Platform;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Npgsql;

namespace Postgrey.Configuration;

/// <summary>
/// postgrey's command line, one typed option for each of its Getopt::Long names, with the same
/// aliases and short forms. Like Getopt::Long (posix_default) it takes <c>--delay=60</c>,
/// <c>--delay 60</c> and single-dash long names (<c>-inet 10023</c>). Each option holds its
/// parser with its checks and its one default (read from the options records), which --help
/// shows. The checks are in the parsers rather than in validators: System.CommandLine stops at
/// the first failing validator, but converts every option, so all problems are reported at once.
/// <see cref="OptionsMapper"/> then maps the values to <see cref="PostgreyOptions"/>.
/// </summary>
internal sealed class PostgreyCommandLine
{
    /// <summary>sun_path holds 108 bytes on Linux and Windows, the last one the NUL.</summary>
    public const int MaxUnixPathBytes = 107;

    /// <summary>Debian's /var/lib/postgrey; on Windows, %ProgramData%\postgrey.</summary>
    public static string DefaultDbDir { get; } = OperatingSystem.IsWindows()
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.CommonApplicationData), "postgrey")
        : "/var/lib/postgrey";

    // The records' own defaults are the flags' defaults.
    private static readonly GreylistOptions Greylist = new();
    private static readonly ServerOptions Server = new();
    private static readonly LoggingOptions Logging = new();
    private static readonly Postgrey.Identity.IdentityOptions Identity = new();

    private readonly RootCommand _root = new("Postgrey for .NET - Postfix greylisting policy server");

    /// <summary>Parses a value; <paramref name="error"/> follows "--flag=TEXT: " in the message.</summary>
    private delegate bool ValueParser<T>(string text, [MaybeNullWhen(false)] out T value, out string error);

    public PostgreyCommandLine()
    {
        // Our own --version: postgrey prints "postgrey 1.37".
        foreach (Option option in _root.Options.OfType<VersionOption>().ToList())
        {
            _root.Options.Remove(option);
        }

        Version = Switch("--version", "show the version and exit");
        Man = Switch("--man", "show the manual (this help) and exit");
        NoAction = Switch("--noaction", "not supported, as in postgrey", "--no-action", "-n");
        Verbose = Switch("--verbose", "more logging", "-v");
        Quiet = Switch("--quiet", "less logging (hides the action= lines, as postgrey)", "-q");
        Daemonize = Switch("--daemonize", "run in the background, logging to syslog", "-d");
        Unix = Many("--unix", "PATH", "listen on unix socket PATH (repeatable)", ParseUnixPaths, "-u");
        Inet = Many("--inet", "[HOST:]PORT", "listen on PORT, localhost if HOST is not given (repeatable)", ParseInet, "-i");
        SocketMode = Value<OctalMode>("--socketmode", "MODE", "unix socket permissions, octal", () => new OctalMode(Server.SocketMode), OctalMode.TryParse);
        User = Text("--user", "USER", $"run as USER (default: {Privileges.DefaultUser}, when started as root)", null);
        Group = Text("--group", "GROUP", "run as group GROUP (default: the user's group)", null);
        DbDir = Text("--dbdir", "PATH", "database directory", () => DefaultDbDir, ifEmpty: "--dbdir needs a path");
        PidFile = Text("--pidfile", "PATH", "write the pid into this file once serving", null, ifEmpty: "--pidfile needs a path");
        Delay = Number("--delay", "N", "greylist for N seconds", Greylist.DelaySeconds, 0, int.MaxValue);
        MaxAge = Number("--max-age", "N", "delete entries not seen for N days", Greylist.MaxAgeSeconds / 86400, 0, 100_000);
        RetryWindow = Value<RetryWindow>("--retry-window", "N", "allow N days for the first retry, or Nh hours", () => new RetryWindow(Greylist.RetryWindowSeconds), Configuration.RetryWindow.TryParse);
        GreylistAction = Text("--greylist-action", "A", "action when greylisting", () => Greylist.GreylistAction, ifEmpty: "--greylist-action must not be empty");
        GreylistText = Text("--greylist-text", "TXT", "text when greylisting (%s: seconds left, %r: recipient domain)", () => Greylist.GreylistText);
        LookupBySubnet = Switch("--lookup-by-subnet", "key on the client's subnet (default)");
        LookupByHost = Switch("--lookup-by-host", "key on the client's full address");
        IPv4Cidr = Number("--ipv4cidr", "N", "IPv4 subnet width for --lookup-by-subnet", Greylist.IPv4Cidr, 0, 32);
        IPv6Cidr = Number("--ipv6cidr", "N", "IPv6 subnet width for --lookup-by-subnet", Greylist.IPv6Cidr, 0, 128);
        // postgrey's "auto-whitelist-clients:s": the flag alone means the default.
        AutoWhitelistClients = Number("--auto-whitelist-clients", "N", "auto-whitelist a client after N passed triplets (0 disables)", Greylist.AutoWhitelistClients, 0, int.MaxValue);
        AutoWhitelistClients.Arity = ArgumentArity.ZeroOrOne;
        WhitelistClients = Many("--whitelist-clients", "FILE", "client whitelist file (repeatable; replaces the defaults)", AsGiven);
        WhitelistRecipients = Many("--whitelist-recipients", "FILE", "recipient whitelist file (repeatable; replaces the defaults)", AsGiven);
        SyslogFacility = Value<FacilityName>("--syslogfacility", "F", "syslog facility", () => FacilityName.Of(Logging.SyslogFacility), FacilityName.TryParse, "--syslog-facility", "--facility");
        Privacy = Switch("--privacy", "store SHA-1 hashes instead of addresses");
        Hostname = Text("--hostname", "NAME", "host name for %h", System.Net.Dns.GetHostName);
        Exim = Switch("--exim", "close the connection after each answer");
        ListenQueueSize = Number("--listen-queue-size", "N", "listen backlog (default: the system's maximum)", null, 1, 65535);
        XGreylistHeader = Text("--x-greylist-header", "TXT", "header added after greylisting (%t %v %h %d)", () => Greylist.XGreylistHeader);

        // Ours, beyond postgrey.
        AllowTestTime = Switch("--allow-test-time", "honour policy_test_time in requests (replay and tests only)");
        MaxConnections = Number("--max-connections", "N", "most concurrent connections", Server.MaxConnections, 1, 1_000_000);
        MaintenanceInterval = Number("--maintenance-interval", "SECONDS", "seconds between database cleanings", 3600, 1, 7 * 86400);
        Syslog = Switch("--syslog", "log to syslog (as -d does) while in the foreground");
        SyslogSocket = Text("--syslog-socket", "PATH", "the syslog socket", () => Logging.SyslogSocket, ifEmpty: "--syslog-socket needs a path");
        DbSync = Choice("--db-sync", "normal: a killed process loses nothing; full: fsync every commit, survives power loss", Configuration.DbSync.Normal);
        Transport = Choice("--transport", "epoll: one loop for every connection (Linux only); sockets: a task per connection", Server.Transport,
            t => t == PolicyTransport.Epoll && !OperatingSystem.IsLinux() ? "needs Linux" : null);
        Db = SharedDatabase();
        DbPasswordFile = Value<DbPassword>("--db-password-file", "PATH", "file holding the PostgreSQL password, first line (else PGPASSWORD, PGPASSFILE or ~/.pgpass)", null, DbPassword.TryRead);
        DbTimeout = Number("--db-timeout", "SECONDS", "longest wait for PostgreSQL before answering DUNNO", (long)new PostgreSqlStoreOptions { ConnectionString = "", Description = "" }.Timeout.TotalSeconds, 1, 600);
        LogFormat = Choice("--log-format", "text: postgrey's lines; json: one JSON object per line", Logging.Format);
        LookupByIdentity = Switch("--lookup-by-identity", "key on the sender's domain when SPF passes the client, else the registrable domain of a verified, non-dynamic client name, else the subnet (docs/pool-aware.md)");
        DnsServer = Value<DnsServerEndpoint>("--dns-server", "HOST[:PORT]", "resolver for --lookup-by-identity (default: the system's)", null, DnsServerEndpoint.TryParse);
        DnsTimeout = Number("--dns-timeout", "MS", "longest SPF check for --lookup-by-identity, in milliseconds, before the key falls back", (long)Identity.Timeout.TotalMilliseconds, 10, 60_000);
        Metrics = Value<InetEndpoint[]>("--metrics", "[HOST:]PORT", "serve Prometheus /metrics and /health on PORT (localhost if HOST is not given)", null, ParseMetrics);
        DryRun = Switch("--dry-run", "decide and record as usual, but answer DUNNO (learning mode; decision lines end in dry_run=yes)");
    }

    public Option<bool> Version { get; }
    public Option<bool> Man { get; }
    public Option<bool> NoAction { get; }
    public Option<bool> Verbose { get; }
    public Option<bool> Quiet { get; }
    public Option<bool> Daemonize { get; }
    public Option<string[]> Unix { get; }
    public Option<InetEndpoint[]> Inet { get; }
    public Option<OctalMode> SocketMode { get; }
    public Option<string> User { get; }
    public Option<string> Group { get; }
    public Option<string> DbDir { get; }
    public Option<string> PidFile { get; }
    public Option<int> Delay { get; }
    public Option<int> MaxAge { get; }
    public Option<RetryWindow> RetryWindow { get; }
    public Option<string> GreylistAction { get; }
    public Option<string> GreylistText { get; }
    public Option<bool> LookupBySubnet { get; }
    public Option<bool> LookupByHost { get; }
    public Option<int> IPv4Cidr { get; }
    public Option<int> IPv6Cidr { get; }
    public Option<int> AutoWhitelistClients { get; }
    public Option<string[]> WhitelistClients { get; }
    public Option<string[]> WhitelistRecipients { get; }
    public Option<FacilityName> SyslogFacility { get; }
    public Option<bool> Privacy { get; }
    public Option<string> Hostname { get; }
    public Option<bool> Exim { get; }
    public Option<int> ListenQueueSize { get; }
    public Option<string> XGreylistHeader { get; }
    public Option<bool> AllowTestTime { get; }
    public Option<int> MaxConnections { get; }
    public Option<int> MaintenanceInterval { get; }
    public Option<DbSync> DbSync { get; }
    public Option<bool> Syslog { get; }
    public Option<string> SyslogSocket { get; }
    public Option<PolicyTransport> Transport { get; }
    public Option<LogFormat> LogFormat { get; }
    public Option<NpgsqlConnectionStringBuilder> Db { get; }
    public Option<DbPassword> DbPasswordFile { get; }
    public Option<int> DbTimeout { get; }
    public Option<bool> LookupByIdentity { get; }
    public Option<DnsServerEndpoint> DnsServer { get; }
    public Option<int> DnsTimeout { get; }
    public Option<InetEndpoint[]> Metrics { get; }
    public Option<bool> DryRun { get; }

    /// <summary>Every option, for the help text and the coverage test.</summary>
    public IEnumerable<Option> Options => _root.Options;

    /// <summary>Every problem, in postgrey's words: each option's, then the command line's as a
    /// whole (checked here, as a command validator would keep the options from being checked).</summary>
    public IReadOnlyList<string> Errors(ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        var errors = parsed.Errors.Select(e => e.Message).ToList();
        if (IsGiven(parsed.RootCommandResult, NoAction))
        {
            errors.Add("don't know how to \"no-action\".");
        }
        if (!IsGiven(parsed.RootCommandResult, Inet) && !IsGiven(parsed.RootCommandResult, Unix))
        {
            errors.Add("--unix or --inet must be specified");
        }
        if (!IsGiven(parsed.RootCommandResult, Db) && (IsGiven(parsed.RootCommandResult, DbPasswordFile) || IsGiven(parsed.RootCommandResult, DbTimeout)))
        {
            errors.Add("--db-password-file and --db-timeout need --db=postgresql://...");
        }
        if (!IsGiven(parsed.RootCommandResult, LookupByIdentity) && (IsGiven(parsed.RootCommandResult, DnsServer) || IsGiven(parsed.RootCommandResult, DnsTimeout)))
        {
            errors.Add("--dns-server and --dns-timeout need --lookup-by-identity");
        }
        return errors;
    }

    public ParseResult Parse(IReadOnlyList<string> args) =>
        // No response files: "@" may legitimately start a value here.
        _root.Parse(AsGetoptReadsThem(args), new ParserConfiguration { ResponseFileTokenReplacer = null });

    /// <summary>-h, --help or --man (postgrey's --man shows its manual; ours is the help).</summary>
    public bool WantsHelp(ParseResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return result.Action is HelpAction || result.GetValue(Man);
    }

    public int WriteHelp(TextWriter output) =>
        Parse(["--help"]).Invoke(new InvocationConfiguration { Output = output });

    /// <summary>Whether <paramref name="option"/> was on the command line (not just defaulted).</summary>
    public static bool IsGiven(SymbolResult result, Option option)
    {
        ArgumentNullException.ThrowIfNull(result);
        return result.GetResult(option) is { Implicit: false };
    }

    /// <summary>What Getopt::Long takes that System.CommandLine would not: a single-dash long name of a
    /// known option (<c>-inet 10023</c>, <c>-delay=60</c>) becomes double-dash, and an empty value
    /// (<c>--greylist-text=</c>, which the tokenizer reads as no value) a value of its own.</summary>
    public IReadOnlyList<string> AsGetoptReadsThem(IReadOnlyList<string> args) => AsGetoptReadsThem(_root.Options, args);

    /// <summary>As <see cref="AsGetoptReadsThem(IReadOnlyList{string})"/>, for a command that takes
    /// the service's flags among its <paramref name="options"/> (<c>postgrey explain $POSTGREY_OPTS ...</c>).</summary>
    public static IReadOnlyList<string> AsGetoptReadsThem(IEnumerable<Option> options, IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(args);
        var longNames = options.SelectMany(o => o.Aliases.Append(o.Name)).Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToHashSet(StringComparer.Ordinal);
        var result = new List<string>(args.Count);
        foreach (string arg in args)
        {
            string spelled = arg.Length > 2 && arg[0] == '-' && arg[1] != '-' ? "-" + arg : arg;
            int equals = spelled.IndexOf('=', StringComparison.Ordinal);
            string name = equals < 0 ? spelled : spelled[..equals];
            if (!longNames.Contains(name))
            {
                result.Add(arg);
            }
            else if (equals == spelled.Length - 1)
            {
                result.Add(name);
                result.Add("");
            }
            else
            {
                result.Add(spelled);
            }
        }
        return result;
    }

    private static InetEndpoint[] ParseInet(ArgumentResult result)
    {
        var endpoints = new List<InetEndpoint>();
        foreach (Token token in result.Tokens)
        {
            if (InetSpec.TryParse(token.Value, out var parsed, out string error))
            {
                endpoints.AddRange(parsed);
            }
            else
            {
                result.AddError(error);
            }
        }
        return [.. endpoints];
    }

    private static bool ParseMetrics(string text, [MaybeNullWhen(false)] out InetEndpoint[] value, out string error)
    {
        value = null;
        if (!InetSpec.TryParse(text, out IReadOnlyList<InetEndpoint> endpoints, out error))
        {
            // InetSpec's messages begin with "--inet=SPEC: "; the caller says "--metrics=SPEC: ".
            int colon = error.IndexOf(": ", StringComparison.Ordinal);
            error = colon < 0 ? error : error[(colon + 2)..];
            return false;
        }
        value = [.. endpoints];
        return true;
    }

    /// <summary>The socket is bound at its full path, which must fit sun_path: checked here, before
    /// the database is opened, rather than failing in bind.</summary>
    private static string[] ParseUnixPaths(ArgumentResult result)
    {
        foreach (Token token in result.Tokens)
        {
            if (string.IsNullOrWhiteSpace(token.Value))
            {
                result.AddError("--unix needs a path");
            }
            else if (Encoding.UTF8.GetByteCount(Path.GetFullPath(token.Value)) > MaxUnixPathBytes)
            {
                result.AddError($"--unix={token.Value}: longer than {MaxUnixPathBytes} bytes");
            }
        }
        return AsGiven(result);
    }

    private Option<bool> Switch(string name, string description, params string[] aliases) =>
        Add(new Option<bool>(name, aliases) { Description = description, Arity = ArgumentArity.Zero });

    /// <summary>A repeatable option: each occurrence one value, all of them <paramref name="parse"/>d together.</summary>
    private Option<T[]> Many<T>(string name, string helpName, string description, Func<ArgumentResult, T[]> parse, params string[] aliases) =>
        Add(new Option<T[]>(name, aliases)
        {
            Description = description,
            HelpName = helpName,
            Arity = ArgumentArity.ZeroOrMore,
            AllowMultipleArgumentsPerToken = false,
            CustomParser = result => parse(result),
        });

    private static string[] AsGiven(ArgumentResult result) => [.. result.Tokens.Select(t => t.Value)];

    /// <summary>A string. An empty one is the error <paramref name="ifEmpty"/> if given, else the
    /// default if there is one (postgrey's <c>$opt{x} || default</c>), else empty.</summary>
    private Option<string> Text(string name, string helpName, string description, Func<string>? defaultValue, string? ifEmpty = null)
    {
        var option = Value<string>(name, helpName, description, defaultValue, null);
        option.CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
            if (text.Length > 0)
            {
                return text;
            }
            if (ifEmpty is not null)
            {
                result.AddError(ifEmpty);
            }
            return defaultValue is null ? text : defaultValue();
        };
        return option;
    }

    /// <summary>A whole number between <paramref name="min"/> and <paramref name="max"/>; absent
    /// or without a value: <paramref name="defaultValue"/>.</summary>
    private Option<int> Number(string name, string helpName, string description, long? defaultValue, long min, long max)
    {
        var option = Value<int>(name, helpName, description, defaultValue is { } d ? () => checked((int)d) : null, (string text, out int value, out string error) =>
        {
            value = 0;
            error = "";
            if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n))
            {
                error = "a whole number is expected";
                return false;
            }
            if (n < min || n > max)
            {
                error = $"must be between {min} and {max}";
                return false;
            }
            value = (int)n;
            return true;
        });
        return option;
    }

    /// <summary>One of an enum's names, in any case; help shows them lower-case.</summary>
    private Option<TEnum> Choice<TEnum>(string name, string description, TEnum defaultValue, Func<TEnum, string?>? unusable = null)
        where TEnum : struct, Enum
    {
        string[] names = Enum.GetNames<TEnum>();
        string expected = string.Join(" or ", names.Select(n => $"'{Lower(n)}'")) + " is expected";
        return Value(name, string.Join('|', names.Select(Lower)), description, () => defaultValue, (string text, out TEnum value, out string error) =>
        {
            error = expected;
            string? match = names.FirstOrDefault(n => string.Equals(n, text, StringComparison.OrdinalIgnoreCase));
            value = match is null ? default : Enum.Parse<TEnum>(match);
            if (match is not null && unusable?.Invoke(value) is { } reason)
            {
                error = reason;
                return false;
            }
            return match is not null;
        });
    }

    private static string Lower(string name) => string.Concat(name.Select(char.ToLowerInvariant));

    /// <summary>An option taking one value, <paramref name="parse"/>d (a missing value, allowed by
    /// an optional arity, is the default), with its default.</summary>
    private Option<T> Value<T>(string name, string helpName, string description, Func<T>? defaultValue, ValueParser<T>? parse, params string[] aliases)
    {
        var option = new Option<T>(name, aliases) { Description = description, HelpName = helpName };
        if (defaultValue is not null)
        {
            option.DefaultValueFactory = _ => defaultValue();
        }
        if (parse is not null)
        {
            option.CustomParser = result =>
            {
                if (result.Tokens.Count == 0 && defaultValue is not null)
                {
                    return defaultValue();
                }
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
                if (parse(text, out T? value, out string error))
                {
                    return value;
                }
                result.AddError($"{name}={text}: {error}");
                return default;
            };
        }
        return Add(option);
    }

    /// <summary>--db: the URI (or libpq key=value list) of the shared PostgreSQL store. Its
    /// errors do not repeat the value, which may hold a password.</summary>
    private Option<NpgsqlConnectionStringBuilder> SharedDatabase()
    {
        var option = new Option<NpgsqlConnectionStringBuilder>("--db")
        {
            Description = "shared PostgreSQL store, postgresql://USER@HOST:PORT/DBNAME (default: SQLite in --dbdir)",
            HelpName = "URI",
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
                NpgsqlConnectionStringBuilder? builder = PostgreSqlConnectionString.Parse(text, out string error);
                if (builder is null)
                {
                    result.AddError($"--db: {error}");
                }
                return builder;
            },
        };
        return Add(option);
    }

    private T Add<T>(T option)
        where T : Option
    {
        _root.Options.Add(option);
        return option;
    }
}
