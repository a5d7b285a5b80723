using Postgrey.Core.Greylisting;
using Postgrey.Server;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Configuration;

/// <summary>Everything the service runs with, typed and checked.</summary>
internal sealed record PostgreyOptions
{
    public required GreylistOptions Greylist { get; init; }
    public required ServerOptions Server { get; init; }
    public required SqliteStoreOptions Storage { get; init; }
    public required LoggingOptions Logging { get; init; }

    /// <summary>Client whitelist files; null: postgrey's defaults.</summary>
    public IReadOnlyList<string>? WhitelistClientFiles { get; init; }

    /// <summary>Recipient whitelist files; null: postgrey's defaults.</summary>
    public IReadOnlyList<string>? WhitelistRecipientFiles { get; init; }

    public TimeSpan MaintenanceInterval { get; init; } = TimeSpan.FromHours(1);

    /// <summary>One-line notes on flags accepted for compatibility that change nothing here yet.</summary>
    public IReadOnlyList<string> CompatibilityWarnings { get; init; } = [];
}

internal enum Verbosity { Quiet, Normal, Verbose }

internal sealed record LoggingOptions
{
    public Verbosity Verbosity { get; init; } = Verbosity.Normal;
    public string SyslogFacility { get; init; } = "mail";
}
