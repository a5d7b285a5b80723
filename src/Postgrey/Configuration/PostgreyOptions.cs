using Postgrey.Core.Greylisting;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Configuration;

/// <summary>Everything the service runs with, typed and checked.</summary>
internal sealed record PostgreyOptions
{
    public required GreylistOptions Greylist { get; init; }
    public required ServerOptions Server { get; init; }
    public required SqliteStoreOptions Storage { get; init; }

    /// <summary>--db: the shared PostgreSQL store instead of SQLite; null: SQLite in --dbdir.</summary>
    public PostgreSqlStoreOptions? PostgreSql { get; init; }
    public required LoggingOptions Logging { get; init; }

    /// <summary>--lookup-by-identity with its DNS settings; null: postgrey's keys.</summary>
    public Postgrey.Identity.IdentityOptions? Identity { get; init; }
    public required ServiceOptions Service { get; init; }

    /// <summary>Client whitelist files; null: postgrey's defaults.</summary>
    public IReadOnlyList<string>? WhitelistClientFiles { get; init; }

    /// <summary>Recipient whitelist files; null: postgrey's defaults.</summary>
    public IReadOnlyList<string>? WhitelistRecipientFiles { get; init; }

    /// <summary>--maintenance-interval; its default is the flag's.</summary>
    public required TimeSpan MaintenanceInterval { get; init; }

    /// <summary>--metrics: where /metrics and /health are served; null: off.</summary>
    public IReadOnlyList<InetEndpoint>? Metrics { get; init; }

    /// <summary>One-line notes on flags accepted for compatibility that change nothing here yet.</summary>
    public IReadOnlyList<string> CompatibilityWarnings { get; init; } = [];
}

internal enum Verbosity { Quiet, Normal, Verbose }

/// <summary>--log-format: postgrey's text lines, or one JSON object per line.</summary>
internal enum LogFormat { Text, Json }

/// <summary>--db-sync: when a commit is fsync'ed (<see cref="Postgrey.Storage.Sqlite.SqliteStoreOptions.SyncEveryCommit"/>).</summary>
internal enum DbSync { Normal, Full }

internal sealed record LoggingOptions
{
    public Verbosity Verbosity { get; init; } = Verbosity.Normal;

    /// <summary>-d or --syslog: log to the syslog socket instead of the console.</summary>
    public bool Syslog { get; init; }

    /// <summary>--syslog-facility as its number (mail = 2).</summary>
    public int SyslogFacility { get; init; } = 2;

    public string SyslogSocket { get; init; } = "/dev/log";

    /// <summary>--log-format</summary>
    public LogFormat Format { get; init; } = LogFormat.Text;
}

/// <summary>How the process runs: in the background, with a pid file, as which account.</summary>
internal sealed record ServiceOptions
{
    public bool Daemonize { get; init; }
    public string? PidFile { get; init; }

    /// <summary>--user; null: postgrey's default (postgrey) when started as root.</summary>
    public string? User { get; init; }

    /// <summary>--group; null: the user's own group.</summary>
    public string? Group { get; init; }
}
