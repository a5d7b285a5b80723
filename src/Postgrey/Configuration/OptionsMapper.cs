using System.CommandLine;
using Postgrey.Core.Greylisting;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Configuration;

/// <summary>
/// Maps a command line that parsed without errors to <see cref="PostgreyOptions"/>. The values
/// are typed and checked by then (<see cref="PostgreyCommandLine"/>); zero means zero here
/// (postgrey silently replaces 0 with the default).
/// </summary>
internal static class OptionsMapper
{
    public static PostgreyOptions Map(PostgreyCommandLine flags, ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(flags);
        ArgumentNullException.ThrowIfNull(parsed);
        if (parsed.Errors.Count > 0)
        {
            throw new ArgumentException("the command line has errors", nameof(parsed));
        }
        T Get<T>(Option<T> option) => parsed.GetValue(option)!;
        string[] whitelistClients = Get(flags.WhitelistClients) ?? [];
        string[] whitelistRecipients = Get(flags.WhitelistRecipients) ?? [];
        string? pidFile = parsed.GetValue(flags.PidFile);

        var warnings = new List<string>();
        if (Get(flags.LookupByHost) && Get(flags.LookupBySubnet))
        {
            warnings.Add("--lookup-by-subnet and --lookup-by-host both given: --lookup-by-host wins, as in postgrey");
        }

        return new PostgreyOptions
        {
            Greylist = new GreylistOptions
            {
                DelaySeconds = Get(flags.Delay),
                MaxAgeSeconds = Get(flags.MaxAge) * 86400L,
                RetryWindowSeconds = Get(flags.RetryWindow).Seconds,
                GreylistAction = Get(flags.GreylistAction),
                GreylistText = Get(flags.GreylistText),
                XGreylistHeader = Get(flags.XGreylistHeader),
                LookupByHost = Get(flags.LookupByHost),
                IPv4Cidr = Get(flags.IPv4Cidr),
                IPv6Cidr = Get(flags.IPv6Cidr),
                AutoWhitelistClients = Get(flags.AutoWhitelistClients),
                Privacy = Get(flags.Privacy),
                Hostname = Get(flags.Hostname),
                AllowTestTime = Get(flags.AllowTestTime),
                DryRun = Get(flags.DryRun),
            },
            Server = new ServerOptions
            {
                Inet = Get(flags.Inet) ?? [],
                Unix = (Get(flags.Unix) ?? []).Select(Path.GetFullPath).ToList(),
                SocketMode = Get(flags.SocketMode).Mode,
                ListenQueueSize = PostgreyCommandLine.IsGiven(parsed.RootCommandResult, flags.ListenQueueSize) ? Get(flags.ListenQueueSize) : null,
                Exim = Get(flags.Exim),
                MaxConnections = Get(flags.MaxConnections),
                Transport = Get(flags.Transport),
            },
            Storage = new SqliteStoreOptions
            {
                Directory = Path.GetFullPath(Get(flags.DbDir)),
                SyncEveryCommit = Get(flags.DbSync) == DbSync.Full,
            },
            PostgreSql = SharedStore(flags, parsed),
            Identity = Get(flags.LookupByIdentity) ? Identity(flags, parsed) : null,
            Logging = new LoggingOptions
            {
                Verbosity = Get(flags.Quiet) ? Verbosity.Quiet : Get(flags.Verbose) ? Verbosity.Verbose : Verbosity.Normal,
                Syslog = Get(flags.Daemonize) || Get(flags.Syslog),
                SyslogFacility = Get(flags.SyslogFacility).Code,
                SyslogSocket = Get(flags.SyslogSocket),
                Format = Get(flags.LogFormat),
            },
            Service = new ServiceOptions
            {
                Daemonize = Get(flags.Daemonize),
                PidFile = pidFile is null ? null : Path.GetFullPath(pidFile),
                User = parsed.GetValue(flags.User),
                Group = parsed.GetValue(flags.Group),
            },
            WhitelistClientFiles = whitelistClients.Length > 0 ? whitelistClients : null,
            WhitelistRecipientFiles = whitelistRecipients.Length > 0 ? whitelistRecipients : null,
            MaintenanceInterval = TimeSpan.FromSeconds(Get(flags.MaintenanceInterval)),
            // Not given: null, not the empty array System.CommandLine hands out for an array option.
            Metrics = PostgreyCommandLine.IsGiven(parsed.RootCommandResult, flags.Metrics) ? parsed.GetValue(flags.Metrics) : null,
            CompatibilityWarnings = warnings,
        };
    }

    /// <summary>--lookup-by-identity's --dns-server and --dns-timeout.</summary>
    private static Postgrey.Identity.IdentityOptions Identity(PostgreyCommandLine flags, ParseResult parsed)
    {
        bool server = PostgreyCommandLine.IsGiven(parsed.RootCommandResult, flags.DnsServer);
        DnsServerEndpoint endpoint = parsed.GetValue(flags.DnsServer);
        return new Postgrey.Identity.IdentityOptions
        {
            DnsServer = server ? endpoint.Address : null,
            DnsPort = server ? endpoint.Port : 53,
            Timeout = TimeSpan.FromMilliseconds(parsed.GetValue(flags.DnsTimeout)),
        };
    }

    /// <summary>--db, --db-password-file, --db-timeout; null without --db (SQLite in --dbdir).</summary>
    private static PostgreSqlStoreOptions? SharedStore(PostgreyCommandLine flags, ParseResult parsed)
    {
        if (parsed.GetValue(flags.Db) is not { } given)
        {
            return null;
        }
        var builder = new Npgsql.NpgsqlConnectionStringBuilder(given.ConnectionString);
        if (PostgreyCommandLine.IsGiven(parsed.RootCommandResult, flags.DbPasswordFile))
        {
            builder.Password = parsed.GetValue(flags.DbPasswordFile).Password;
        }
        return new PostgreSqlStoreOptions
        {
            ConnectionString = builder.ConnectionString,
            Description = PostgreSqlConnectionString.Describe(builder),
            Timeout = TimeSpan.FromSeconds(parsed.GetValue(flags.DbTimeout)),
        };
    }
}
