namespace Postgrey.Migration.Tests;

/// <summary>Each key form postgrey versions wrote, and what the import makes of it.</summary>
public sealed class PostgreyKeysTests
{
    [Theory]
    [InlineData("192.0.2.0/a@b.example/c@d.example", "192.0.2.0/a@b.example/c@d.example")]
    [InlineData("192.0.2.10/32/a@b.example/c@d.example", "192.0.2.10/32/a@b.example/c@d.example")]
    [InlineData("192.0.2.0/24/a@b.example/c@d.example", "192.0.2.0/a@b.example/c@d.example")]
    [InlineData("10.1.0.0/16//c@d.example", "10.1.0.0//c@d.example")]
    [InlineData("192.0.2/a@b.example/c@d.example", "192.0.2.0/a@b.example/c@d.example")]
    [InlineData("2001:db8:0:0:0:0:0:0/a@b.example/c@d.example", "2001:db8:0:0:0:0:0:0/a@b.example/c@d.example")]
    [InlineData("2001:db8::1/128/a@b.example/c@d.example", "2001:db8:0:0:0:0:0:1/128/a@b.example/c@d.example")]
    [InlineData("2001:DB8::/64/a@b.example/c@d.example", "2001:db8:0:0:0:0:0:0/a@b.example/c@d.example")]
    [InlineData("192.0.2.0/24/c@d.example", "192.0.2.0/24/c@d.example")] // 1.37 with the sender "24": one slash too few for a prefix
    [InlineData("da39a3ee5e6b4b0d3255bfef95601890afd80709", "da39a3ee5e6b4b0d3255bfef95601890afd80709")]
    public void TryNormalizeTriplet_KnownForm_Postgrey137Key(string key, string expected)
    {
        Assert.True(PostgreyKeys.TryNormalizeTriplet(key, out string normalized, out string reason), reason);
        Assert.Equal(expected, normalized);
    }

    [Theory]
    [InlineData("mx.example/a@b.example/c@d.example", "is not an IP address")]
    [InlineData("192.0.2.0", "not CLIENT/SENDER/RECIPIENT")]
    [InlineData("192.0.2.0/a@b.example", "not CLIENT/SENDER/RECIPIENT")]
    [InlineData("192.0.2.0/33/a@b.example/c@d.example", "longer than the address")]
    [InlineData("DA39A3EE5E6B4B0D3255BFEF95601890AFD80709", "not CLIENT/SENDER/RECIPIENT")]
    public void TryNormalizeTriplet_Garbage_RejectedWithReason(string key, string because)
    {
        Assert.False(PostgreyKeys.TryNormalizeTriplet(key, out _, out string reason));
        Assert.Contains(because, reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("192.0.2.10", "192.0.2.10")]
    [InlineData("2001:db8::1", "2001:DB8:0:0:0:0:0:1")]
    [InlineData("2001:DB8:0:0:0:0:0:1", "2001:DB8:0:0:0:0:0:1")]
    [InlineData("da39a3ee5e6b4b0d3255bfef95601890afd80709", "da39a3ee5e6b4b0d3255bfef95601890afd80709")]
    public void TryNormalizeClient_KnownForm_Postgrey137Key(string key, string expected)
    {
        Assert.True(PostgreyKeys.TryNormalizeClient(key, out string normalized, out string reason), reason);
        Assert.Equal(expected, normalized);
    }

    [Theory]
    [InlineData("100,200", 0, true, 100, 200)]
    [InlineData("100,200,10", 1, true, 100, 200)] // 1.2x kept the host part
    [InlineData("100,200,10", 0, false, 0, 0)]
    [InlineData("100", 1, false, 0, 0)]
    [InlineData("-1,200", 1, false, 0, 0)]
    [InlineData("1e3,200", 1, false, 0, 0)]
    [InlineData(" 1,2", 1, false, 0, 0)]
    public void TryParseValue_Forms(string value, int extra, bool ok, long first, long second)
    {
        Assert.Equal(ok, PostgreyKeys.TryParseValue(value, extra, out long a, out long b, out _));
        if (ok)
        {
            Assert.Equal((first, second), (a, b));
        }
    }
}
