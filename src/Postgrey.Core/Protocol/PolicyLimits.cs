namespace Postgrey.Core.Protocol;

/// <summary>
/// Hard limits per connection, so that no client can grow our memory without bound.
/// Postfix 3.x sends about 40 attributes in under 1 KiB, so these leave a wide margin.
/// </summary>
public sealed record PolicyLimits
{
    /// <summary>Longest line (attribute) accepted, newline excluded.</summary>
    public int MaxLineBytes { get; init; } = 8 * 1024;

    /// <summary>Most attribute lines in one request.</summary>
    public int MaxAttributesPerRequest { get; init; } = 256;

    /// <summary>Most bytes in one request, all lines together.</summary>
    public int MaxRequestBytes { get; init; } = 64 * 1024;

    /// <summary>A connection with no complete request for this long is closed. Longer than
    /// Postfix's smtpd_policy_service_max_idle (300 s) so that Postfix is the side that closes.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(600);

    /// <summary>Postgrey cuts every name and value to 512 characters (bytes on the wire).</summary>
    public const int PostgreyValueLimit = 512;
}
