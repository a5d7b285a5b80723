using System.CommandLine;
using System.CommandLine.Help;

namespace Postgrey.Configuration;

/// <summary>
/// postgrey's command line, one option for each of its Getopt::Long names, with the same
/// aliases and short forms. Like Getopt::Long (posix_default) it takes <c>--delay=60</c>,
/// <c>--delay 60</c> and single-dash long names (<c>-inet 10023</c>). Values are read as strings
/// and checked by <see cref="OptionsMapper"/>, so that every error is reported postgrey-style.
/// </summary>
internal sealed class PostgreyCommandLine
{
    private readonly RootCommand _root = new("Postgrey for .NET - Postfix greylisting policy server");

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
        Unix = Many("--unix", "PATH", "listen on unix socket PATH (repeatable)", "-u");
        Inet = Many("--inet", "[HOST:]PORT", "listen on PORT, localhost if HOST is not given (repeatable)", "-i");
        SocketMode = Value("--socketmode", "MODE", "unix socket permissions, octal (default 0666)");
        User = Value("--user", "USER", "run as USER (default: postgrey)");
        Group = Value("--group", "GROUP", "run as group GROUP (default: postgrey)");
        DbDir = Value("--dbdir", "PATH", "database directory (default: /var/lib/postgrey)");
        PidFile = Value("--pidfile", "PATH", "write the pid into this file once serving");
        Delay = Value("--delay", "N", "greylist for N seconds (default: 300)");
        MaxAge = Value("--max-age", "N", "delete entries not seen for N days (default: 35)");
        RetryWindow = Value("--retry-window", "N", "allow N days for the first retry, or Nh hours (default: 2)");
        GreylistAction = Value("--greylist-action", "A", "action when greylisting (default: DEFER_IF_PERMIT)");
        GreylistText = Value("--greylist-text", "TXT", "text when greylisting (%s: seconds left, %r: recipient domain)");
        LookupBySubnet = Switch("--lookup-by-subnet", "key on the client's subnet (default)");
        LookupByHost = Switch("--lookup-by-host", "key on the client's full address");
        IPv4Cidr = Value("--ipv4cidr", "N", "IPv4 subnet width for --lookup-by-subnet (default: 24)");
        IPv6Cidr = Value("--ipv6cidr", "N", "IPv6 subnet width for --lookup-by-subnet (default: 64)");
        AutoWhitelistClients = Value("--auto-whitelist-clients", "N", "auto-whitelist a client after N passed triplets (default: 5; 0 disables)");
        AutoWhitelistClients.Arity = ArgumentArity.ZeroOrOne;
        WhitelistClients = Many("--whitelist-clients", "FILE", "client whitelist file (repeatable; replaces the defaults)");
        WhitelistRecipients = Many("--whitelist-recipients", "FILE", "recipient whitelist file (repeatable; replaces the defaults)");
        SyslogFacility = Value("--syslogfacility", "F", "syslog facility (default: mail)", "--syslog-facility", "--facility");
        Privacy = Switch("--privacy", "store SHA-1 hashes instead of addresses");
        Hostname = Value("--hostname", "NAME", "host name for %h (default: the system's)");
        Exim = Switch("--exim", "close the connection after each answer");
        ListenQueueSize = Value("--listen-queue-size", "N", "listen backlog (default: the system's maximum)");
        XGreylistHeader = Value("--x-greylist-header", "TXT", "header added after greylisting (%t %v %h %d)");

        // Ours, beyond postgrey.
        AllowTestTime = Switch("--allow-test-time", "honour policy_test_time in requests (replay and tests only)");
        MaxConnections = Value("--max-connections", "N", "most concurrent connections (default: 1000)");
        MaintenanceInterval = Value("--maintenance-interval", "SECONDS", "seconds between database cleanings (default: 3600)");
        Syslog = Switch("--syslog", "log to syslog (as -d does) while in the foreground");
        SyslogSocket = Value("--syslog-socket", "PATH", "the syslog socket (default: /dev/log)");
        Db = Value("--db", "URI", "shared PostgreSQL store, postgresql://USER@HOST:PORT/DBNAME (default: SQLite in --dbdir)");
        DbPasswordFile = Value("--db-password-file", "PATH", "file holding the PostgreSQL password (else PGPASSWORD, PGPASSFILE or ~/.pgpass)");
        DbTimeout = Value("--db-timeout", "SECONDS", "longest wait for PostgreSQL before answering DUNNO (default: 3)");
        DbSync = Value("--db-sync", "normal|full", "normal: a killed process loses nothing (default); full: fsync every commit, survives power loss");
    }

    public Option<bool> Version { get; }
    public Option<bool> Man { get; }
    public Option<bool> NoAction { get; }
    public Option<bool> Verbose { get; }
    public Option<bool> Quiet { get; }
    public Option<bool> Daemonize { get; }
    public Option<string[]> Unix { get; }
    public Option<string[]> Inet { get; }
    public Option<string?> SocketMode { get; }
    public Option<string?> User { get; }
    public Option<string?> Group { get; }
    public Option<string?> DbDir { get; }
    public Option<string?> PidFile { get; }
    public Option<string?> Delay { get; }
    public Option<string?> MaxAge { get; }
    public Option<string?> RetryWindow { get; }
    public Option<string?> GreylistAction { get; }
    public Option<string?> GreylistText { get; }
    public Option<bool> LookupBySubnet { get; }
    public Option<bool> LookupByHost { get; }
    public Option<string?> IPv4Cidr { get; }
    public Option<string?> IPv6Cidr { get; }
    public Option<string?> AutoWhitelistClients { get; }
    public Option<string[]> WhitelistClients { get; }
    public Option<string[]> WhitelistRecipients { get; }
    public Option<string?> SyslogFacility { get; }
    public Option<bool> Privacy { get; }
    public Option<string?> Hostname { get; }
    public Option<bool> Exim { get; }
    public Option<string?> ListenQueueSize { get; }
    public Option<string?> XGreylistHeader { get; }
    public Option<bool> AllowTestTime { get; }
    public Option<string?> MaxConnections { get; }
    public Option<string?> MaintenanceInterval { get; }
    public Option<string?> DbSync { get; }
    public Option<string?> Db { get; }
    public Option<string?> DbPasswordFile { get; }
    public Option<string?> DbTimeout { get; }
    public Option<bool> Syslog { get; }
    public Option<string?> SyslogSocket { get; }

    /// <summary>Every option, for the help text and the coverage test.</summary>
    public IEnumerable<Option> Options => _root.Options;

    public ParseResult Parse(IReadOnlyList<string> args) =>
        // No response files: "@" may legitimately start a value here.
        _root.Parse(WithDoubleDash(args), new ParserConfiguration { ResponseFileTokenReplacer = null });

    /// <summary>Getopt::Long takes <c>-inet 10023</c> for <c>--inet 10023</c>: rewrites a single-dash
    /// long name of a known option (with or without <c>=value</c>) to its double-dash form.</summary>
    public IReadOnlyList<string> WithDoubleDash(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var longNames = _root.Options.SelectMany(o => o.Aliases.Append(o.Name)).Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToHashSet(StringComparer.Ordinal);
        var result = new List<string>(args.Count);
        foreach (string arg in args)
        {
            if (arg.Length > 2 && arg[0] == '-' && arg[1] != '-')
            {
                int equals = arg.IndexOf('=', StringComparison.Ordinal);
                string name = "-" + (equals < 0 ? arg : arg[..equals]);
                if (longNames.Contains(name))
                {
                    result.Add("-" + arg);
                    continue;
                }
            }
            result.Add(arg);
        }
        return result;
    }

    public static bool IsHelp(ParseResult result) => result.Action is HelpAction;

    public static int PrintHelp(ParseResult result) => result.Invoke();

    /// <summary>What was given, as strings; null where a flag was absent.</summary>
    public PostgreyFlags Read(ParseResult r)
    {
        ArgumentNullException.ThrowIfNull(r);
        return new PostgreyFlags
        {
            Verbose = r.GetValue(Verbose),
            Quiet = r.GetValue(Quiet),
            NoAction = r.GetValue(NoAction),
            Daemonize = r.GetValue(Daemonize),
            Unix = r.GetValue(Unix) ?? [],
            Inet = r.GetValue(Inet) ?? [],
            SocketMode = r.GetValue(SocketMode),
            User = r.GetValue(User),
            Group = r.GetValue(Group),
            DbDir = r.GetValue(DbDir),
            PidFile = r.GetValue(PidFile),
            Delay = r.GetValue(Delay),
            MaxAge = r.GetValue(MaxAge),
            RetryWindow = r.GetValue(RetryWindow),
            GreylistAction = r.GetValue(GreylistAction),
            GreylistText = r.GetValue(GreylistText),
            LookupBySubnet = r.GetValue(LookupBySubnet),
            LookupByHost = r.GetValue(LookupByHost),
            IPv4Cidr = r.GetValue(IPv4Cidr),
            IPv6Cidr = r.GetValue(IPv6Cidr),
            AutoWhitelistClientsGiven = r.GetResult(AutoWhitelistClients) is not null,
            AutoWhitelistClients = r.GetValue(AutoWhitelistClients),
            WhitelistClients = r.GetValue(WhitelistClients) ?? [],
            WhitelistRecipients = r.GetValue(WhitelistRecipients) ?? [],
            SyslogFacility = r.GetValue(SyslogFacility),
            Privacy = r.GetValue(Privacy),
            Hostname = r.GetValue(Hostname),
            Exim = r.GetValue(Exim),
            ListenQueueSize = r.GetValue(ListenQueueSize),
            XGreylistHeader = r.GetValue(XGreylistHeader),
            AllowTestTime = r.GetValue(AllowTestTime),
            MaxConnections = r.GetValue(MaxConnections),
            MaintenanceInterval = r.GetValue(MaintenanceInterval),
            DbSync = r.GetValue(DbSync),
            Db = r.GetValue(Db),
            DbPasswordFile = r.GetValue(DbPasswordFile),
            DbTimeout = r.GetValue(DbTimeout),
            Syslog = r.GetValue(Syslog),
            SyslogSocket = r.GetValue(SyslogSocket),
        };
    }

    private Option<bool> Switch(string name, string description, params string[] aliases)
    {
        var option = new Option<bool>(name, aliases) { Description = description, Arity = ArgumentArity.Zero };
        _root.Options.Add(option);
        return option;
    }

    private Option<string?> Value(string name, string help, string description, params string[] aliases)
    {
        var option = new Option<string?>(name, aliases) { Description = description, HelpName = help };
        _root.Options.Add(option);
        return option;
    }

    private Option<string[]> Many(string name, string help, string description, params string[] aliases)
    {
        var option = new Option<string[]>(name, aliases)
        {
            Description = description,
            HelpName = help,
            Arity = ArgumentArity.ZeroOrMore,
            AllowMultipleArgumentsPerToken = false,
        };
        _root.Options.Add(option);
        return option;
    }
}
