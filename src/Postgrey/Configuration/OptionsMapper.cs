using System.Globalization;
using System.Net;
using Postgrey.Core.Greylisting;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Configuration;

/// <summary>
/// Checks the flags and maps them to <see cref="PostgreyOptions"/>. Every problem is collected
/// before anything is reported, so an admin sees all of them at once. Zero means zero here
/// (postgrey silently replaces 0 with the default).
/// </summary>
internal static class OptionsMapper
{
    /// <summary>Debian's /var/lib/postgrey; on Windows, %ProgramData%\postgrey.</summary>
    public static string DefaultDbDir { get; } = OperatingSystem.IsWindows()
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.CommonApplicationData), "postgrey")
        : "/var/lib/postgrey";

    public static PostgreyOptions? Map(PostgreyFlags flags, out IReadOnlyList<string> errors)
    {
        ArgumentNullException.ThrowIfNull(flags);
        var problems = new List<string>();
        var warnings = new List<string>();

        if (flags.NoAction)
        {
            problems.Add("don't know how to \"no-action\".");
        }
        if (flags.Inet.Count == 0 && flags.Unix.Count == 0)
        {
            problems.Add("--unix or --inet must be specified");
        }

        var inet = new List<InetEndpoint>();
        foreach (string spec in flags.Inet)
        {
            if (InetSpec.TryParse(spec, out var endpoints, out string error))
            {
                inet.AddRange(endpoints);
            }
            else
            {
                problems.Add(error);
            }
        }
        foreach (string path in flags.Unix)
        {
            if (string.IsNullOrWhiteSpace(path))
            {
                problems.Add("--unix needs a path");
            }
        }

        long delay = Integer(flags.Delay, "--delay", 300, 0, int.MaxValue, problems);
        long maxAgeDays = Integer(flags.MaxAge, "--max-age", 35, 0, 100_000, problems);
        long retryWindow = RetryWindow(flags.RetryWindow, problems);
        int ipv4Cidr = (int)Integer(flags.IPv4Cidr, "--ipv4cidr", 24, 0, 32, problems);
        int ipv6Cidr = (int)Integer(flags.IPv6Cidr, "--ipv6cidr", 64, 0, 128, problems);
        // --auto-whitelist-clients alone means 5, as in postgrey.
        int awl = (int)Integer(string.IsNullOrEmpty(flags.AutoWhitelistClients) ? null : flags.AutoWhitelistClients, "--auto-whitelist-clients", 5, 0, int.MaxValue, problems);
        int? backlog = flags.ListenQueueSize is null ? null : (int)Integer(flags.ListenQueueSize, "--listen-queue-size", 0, 1, 65535, problems);
        int maxConnections = (int)Integer(flags.MaxConnections, "--max-connections", 1000, 1, 1_000_000, problems);
        long maintenance = Integer(flags.MaintenanceInterval, "--maintenance-interval", 3600, 1, 7 * 86400, problems);

        UnixFileMode socketMode = (UnixFileMode)Convert.ToInt32("666", 8);
        if (flags.SocketMode is { } modeText)
        {
            if (modeText.Length is >= 1 and <= 4 && modeText.All(c => c is >= '0' and <= '7'))
            {
                socketMode = (UnixFileMode)Convert.ToInt32(modeText, 8);
            }
            else
            {
                problems.Add($"--socketmode={modeText}: an octal mode such as 0660 is expected");
            }
        }

        bool syncFull = false;
        switch (flags.DbSync)
        {
            case null or "normal":
                break;
            case "full":
                syncFull = true;
                break;
            default:
                problems.Add($"--db-sync={flags.DbSync}: 'normal' or 'full' is expected");
                break;
        }

        PostgreSqlStoreOptions? postgreSql = SharedStore(flags, problems);

        if (flags.GreylistAction is "")
        {
            problems.Add("--greylist-action must not be empty");
        }
        if (flags.LookupByHost && flags.LookupBySubnet)
        {
            warnings.Add("--lookup-by-subnet and --lookup-by-host both given: --lookup-by-host wins, as in postgrey");
        }
        int facility = 2;
        if (flags.SyslogFacility is { } facilityName && !Postgrey.Hosting.SyslogFacility.TryParse(facilityName, out facility))
        {
            problems.Add($"--syslog-facility={facilityName}: one of {Postgrey.Hosting.SyslogFacility.Names} is expected");
        }
        if (flags.PidFile is "")
        {
            problems.Add("--pidfile needs a path");
        }

        errors = problems;
        if (problems.Count > 0)
        {
            return null;
        }

        var greylist = new GreylistOptions
        {
            DelaySeconds = delay,
            MaxAgeSeconds = maxAgeDays * 86400,
            RetryWindowSeconds = retryWindow,
            GreylistAction = flags.GreylistAction ?? "DEFER_IF_PERMIT",
            GreylistText = string.IsNullOrEmpty(flags.GreylistText) ? GreylistOptions.DefaultGreylistText : flags.GreylistText,
            XGreylistHeader = string.IsNullOrEmpty(flags.XGreylistHeader) ? GreylistOptions.DefaultXGreylistHeader : flags.XGreylistHeader,
            LookupByHost = flags.LookupByHost,
            IPv4Cidr = ipv4Cidr,
            IPv6Cidr = ipv6Cidr,
            AutoWhitelistClients = awl,
            Privacy = flags.Privacy,
            Hostname = flags.Hostname ?? Dns.GetHostName(),
            AllowTestTime = flags.AllowTestTime,
        };

        return new PostgreyOptions
        {
            Greylist = greylist,
            Server = new ServerOptions
            {
                Inet = inet,
                Unix = flags.Unix.Select(Path.GetFullPath).ToList(),
                SocketMode = socketMode,
                ListenQueueSize = backlog,
                Exim = flags.Exim,
                MaxConnections = maxConnections,
            },
            Storage = new SqliteStoreOptions
            {
                Directory = Path.GetFullPath(flags.DbDir ?? DefaultDbDir),
                SyncEveryCommit = syncFull,
            },
            PostgreSql = postgreSql,
            Logging = new LoggingOptions
            {
                Verbosity = flags.Quiet ? Verbosity.Quiet : flags.Verbose ? Verbosity.Verbose : Verbosity.Normal,
                Syslog = flags.Daemonize || flags.Syslog,
                SyslogFacility = facility,
                SyslogSocket = flags.SyslogSocket ?? "/dev/log",
            },
            Service = new ServiceOptions
            {
                Daemonize = flags.Daemonize,
                PidFile = flags.PidFile is null ? null : Path.GetFullPath(flags.PidFile),
                User = flags.User,
                Group = flags.Group,
            },
            WhitelistClientFiles = flags.WhitelistClients.Count > 0 ? flags.WhitelistClients : null,
            WhitelistRecipientFiles = flags.WhitelistRecipients.Count > 0 ? flags.WhitelistRecipients : null,
            MaintenanceInterval = TimeSpan.FromSeconds(maintenance),
            CompatibilityWarnings = warnings,
        };
    }

    /// <summary>--db, --db-password-file, --db-timeout. The password file is read now, while
    /// still root: it may be readable by root alone.</summary>
    private static PostgreSqlStoreOptions? SharedStore(PostgreyFlags flags, List<string> problems)
    {
        long timeoutMs = flags.DbTimeout is null ? 3000 : (long)(ParseSeconds(flags.DbTimeout, "--db-timeout", problems) * 1000);
        if (flags.Db is null)
        {
            if (flags.DbPasswordFile is not null || flags.DbTimeout is not null)
            {
                problems.Add("--db-password-file and --db-timeout need --db=postgresql://...");
            }
            return null;
        }
        Npgsql.NpgsqlConnectionStringBuilder? builder = PostgreSqlConnectionString.Parse(flags.Db, out string error);
        if (builder is null)
        {
            problems.Add($"--db: {error}");
            return null;
        }
        if (flags.DbPasswordFile is { } passwordFile)
        {
            try
            {
                // The first line, as a password file for psql's \password or docker secrets holds it.
                builder.Password = File.ReadLines(passwordFile).FirstOrDefault() ?? "";
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                problems.Add($"--db-password-file={passwordFile}: {ex.Message}");
                return null;
            }
        }
        return new PostgreSqlStoreOptions
        {
            ConnectionString = builder.ConnectionString,
            Description = PostgreSqlConnectionString.Describe(builder),
            Timeout = TimeSpan.FromMilliseconds(timeoutMs),
        };
    }

    /// <summary>Seconds, fractions allowed (0.5), between 0.1 and 600.</summary>
    private static double ParseSeconds(string text, string flag, List<string> problems)
    {
        if (double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double seconds) && seconds is >= 0.1 and <= 600)
        {
            return seconds;
        }
        problems.Add($"{flag}={text}: a number of seconds between 0.1 and 600 is expected");
        return 3;
    }

    private static long Integer(string? text, string flag, long fallback, long min, long max, List<string> problems)
    {
        if (text is null)
        {
            return fallback;
        }
        if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value))
        {
            problems.Add($"{flag}={text}: a whole number is expected");
            return fallback;
        }
        if (value < min || value > max)
        {
            problems.Add($"{flag}={text}: must be between {min} and {max}");
            return fallback;
        }
        return value;
    }

    /// <summary>--retry-window: N days, or Nh hours.</summary>
    private static long RetryWindow(string? text, List<string> problems)
    {
        if (text is null)
        {
            return 2 * 86400;
        }
        bool hours = text.EndsWith('h') || text.EndsWith('H');
        string digits = hours ? text[..^1] : text;
        if (digits.Length > 0 && digits.Length <= 9 && digits.All(char.IsAsciiDigit))
        {
            long n = long.Parse(digits, CultureInfo.InvariantCulture);
            return hours ? n * 3600 : n * 86400;
        }
        problems.Add($"--retry-window={text}: must be either a number of days or a number followed by 'h' for hours ('6h' for example)");
        return 0;
    }
}
