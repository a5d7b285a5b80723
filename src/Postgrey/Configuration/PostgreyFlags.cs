namespace Postgrey.Configuration;

/// <summary>The command line as given: strings, unchecked. <see cref="OptionsMapper"/> turns it
/// into typed options.</summary>
internal sealed record PostgreyFlags
{
    public bool Verbose { get; init; }
    public bool Quiet { get; init; }
    public bool NoAction { get; init; }
    public bool Daemonize { get; init; }
    public IReadOnlyList<string> Unix { get; init; } = [];
    public IReadOnlyList<string> Inet { get; init; } = [];
    public string? SocketMode { get; init; }
    public string? User { get; init; }
    public string? Group { get; init; }
    public string? DbDir { get; init; }
    public string? PidFile { get; init; }
    public string? Delay { get; init; }
    public string? MaxAge { get; init; }
    public string? RetryWindow { get; init; }
    public string? GreylistAction { get; init; }
    public string? GreylistText { get; init; }
    public bool LookupBySubnet { get; init; }
    public bool LookupByHost { get; init; }
    public string? IPv4Cidr { get; init; }
    public string? IPv6Cidr { get; init; }
    public bool AutoWhitelistClientsGiven { get; init; }
    public string? AutoWhitelistClients { get; init; }
    public IReadOnlyList<string> WhitelistClients { get; init; } = [];
    public IReadOnlyList<string> WhitelistRecipients { get; init; } = [];
    public string? SyslogFacility { get; init; }
    public bool Privacy { get; init; }
    public string? Hostname { get; init; }
    public bool Exim { get; init; }
    public string? ListenQueueSize { get; init; }
    public string? XGreylistHeader { get; init; }
    public bool AllowTestTime { get; init; }
    public string? MaxConnections { get; init; }
    public string? MaintenanceInterval { get; init; }
    public string? DbSync { get; init; }
    public string? Db { get; init; }
    public string? DbPasswordFile { get; init; }
    public string? DbTimeout { get; init; }
    public bool Syslog { get; init; }
    public string? SyslogSocket { get; init; }
}
