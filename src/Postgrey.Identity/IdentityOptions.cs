using System.Net;

namespace Postgrey.Identity;

/// <summary>--lookup-by-identity's settings.</summary>
public sealed record IdentityOptions
{
    /// <summary>--dns-server; null: the system's resolvers (/etc/resolv.conf).</summary>
    public IPAddress? DnsServer { get; init; }

    /// <summary>--dns-server's port.</summary>
    public int DnsPort { get; init; } = 53;

    /// <summary>--dns-timeout: the longest an SPF check may take before the subnet key is used.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>The Public Suffix List; a missing file disables the host-name rule.</summary>
    public string PublicSuffixListPath { get; init; } = PublicSuffixList.DebianPath;
}
