namespace Postgrey.Core.Greylisting;

/// <summary>The decision settings, one for each postgrey flag. Durations are whole seconds,
/// as postgrey computes with them.</summary>
public sealed record GreylistOptions
{
    public const string DefaultGreylistText = "Greylisted, see http://postgrey.schweikert.ch/help/%r.html";
    public const string DefaultXGreylistHeader = "X-Greylist: delayed %t seconds by postgrey-%v at %h; %d";

    /// <summary>--delay</summary>
    public long DelaySeconds { get; init; } = 300;

    /// <summary>--max-age (days on the command line)</summary>
    public long MaxAgeSeconds { get; init; } = 35 * 86400;

    /// <summary>--retry-window (days, or hours with 'h')</summary>
    public long RetryWindowSeconds { get; init; } = 2 * 86400;

    /// <summary>--greylist-action</summary>
    public string GreylistAction { get; init; } = "DEFER_IF_PERMIT";

    /// <summary>--greylist-text</summary>
    public string GreylistText { get; init; } = DefaultGreylistText;

    /// <summary>--x-greylist-header</summary>
    public string XGreylistHeader { get; init; } = DefaultXGreylistHeader;

    /// <summary>--lookup-by-host</summary>
    public bool LookupByHost { get; init; }

    /// <summary>--ipv4cidr</summary>
    public int IPv4Cidr { get; init; } = 24;

    /// <summary>--ipv6cidr</summary>
    public int IPv6Cidr { get; init; } = 64;

    /// <summary>--auto-whitelist-clients; 0 disables the auto-whitelist.</summary>
    public int AutoWhitelistClients { get; init; } = 5;

    /// <summary>--privacy</summary>
    public bool Privacy { get; init; }

    /// <summary>--hostname, for %h</summary>
    public string Hostname { get; init; } = "localhost";

    /// <summary>--allow-test-time: honour policy_test_time (postgrey trusts it from anyone).</summary>
    public bool AllowTestTime { get; init; }

    /// <summary>--dry-run: decide and record as usual, answer DUNNO, mark the decision lines.</summary>
    public bool DryRun { get; init; }

    /// <summary>How many recent message instances are remembered so that a message with several
    /// recipients gets one X-Greylist header (postgrey: 10, too few under concurrency).</summary>
    public int InstanceMemory { get; init; } = 10_000;
}
