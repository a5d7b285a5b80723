using Postgrey.Core.Greylisting;

namespace Postgrey.Core.Tests.Greylisting;

public class TripletKeyTests
{
    private static readonly GreylistOptions Defaults = new();

    private static string Key(string client, string sender, string recipient, GreylistOptions? options = null)
    {
        Assert.True(ClientAddress.TryParse(client, out var address), client);
        return TripletKey.Build(address, sender, recipient, options ?? Defaults);
    }

    [Fact]
    public void Build_IPv4_MasksToSlash24AndLowersEverything()
    {
        Assert.Equal("192.0.2.0/a@example.net/b@example.org", Key("192.0.2.7", "A@Example.NET", "B@Example.ORG"));
    }

    [Fact]
    public void Build_IPv4Cidr_IsHonoured()
    {
        Assert.Equal("192.0.0.0/a@x/b@y", Key("192.0.2.7", "a@x", "b@y", new GreylistOptions { IPv4Cidr = 16 }));
        Assert.Equal("192.0.2.7/a@x/b@y", Key("192.0.2.7", "a@x", "b@y", new GreylistOptions { IPv4Cidr = 32 }));
    }

    [Fact]
    public void Build_IPv6_IsWrittenUncompressedWithoutLeadingZeros()
    {
        Assert.Equal("2a01:222:f400:fe44:0:0:0:0/a@x/b@y", Key("2a01:0222:f400:fe44:aaaa::1", "a@x", "b@y"));
    }

    [Fact]
    public void Build_IPv6Cidr_IsHonoured()
    {
        Assert.Equal("2001:db8:0:0:0:0:0:0/a@x/b@y", Key("2001:db8:ffff::1", "a@x", "b@y", new GreylistOptions { IPv6Cidr = 32 }));
    }

    [Fact]
    public void Build_LookupByHost_KeepsTheWholeAddressWithItsLength()
    {
        var byHost = new GreylistOptions { LookupByHost = true };
        Assert.Equal("192.0.2.10/32/a@x/b@y", Key("192.0.2.10", "a@x", "b@y", byHost));
        Assert.Equal("2001:db8:0:0:0:0:0:1/128/a@x/b@y", Key("2001:DB8::1", "a@x", "b@y", byHost));
    }

    [Fact]
    public void Build_IPv4MappedIPv6_IsKeyedAsIPv4()
    {
        Assert.Equal("192.0.2.0/a@x/b@y", Key("::ffff:192.0.2.7", "a@x", "b@y"));
    }

    [Fact]
    public void Build_Privacy_IsTheSha1OfTheKey()
    {
        Assert.Equal("a49b94c9fa6f867e464a6c9c416dec1994131bfe",
            Key("192.0.2.7", "a@example.net", "b@example.org", new GreylistOptions { Privacy = true }));
    }

    [Fact]
    public void ClientKey_IsTheFullAddressAsPostgreySpellsIt()
    {
        Assert.True(ClientAddress.TryParse("2001:db8::1", out var v6));
        Assert.Equal("2001:DB8:0:0:0:0:0:1", TripletKey.ClientKey(v6, Defaults));
        Assert.Equal("2b65cb35b0c0dbaa8151cbe85ee3ec24d8cc21a8", TripletKey.ClientKey(v6, new GreylistOptions { Privacy = true }));
        Assert.True(ClientAddress.TryParse("192.0.2.7", out var v4));
        Assert.Equal("3a8e329934c7cda5120fd97583dbbfeb679b24c8", TripletKey.ClientKey(v4, new GreylistOptions { Privacy = true }));
    }

    [Theory]
    [InlineData("prvs=1234567890=user@example.com", "user@example.com")]     // standard: prvs=tag=local
    [InlineData("prvs=user=1234567890@example.com", "user@example.com")]     // reversed
    [InlineData("prvs=abcdefghij=0123456789@x", "#@x")]                      // both look like tags: the standard (then VERP)
    [InlineData("prvs=foo=bar@x", "bar@x")]                                   // neither: the standard
    [InlineData("prvs=ABCDEFGHIJ=user@x", "user@x")]                          // tags are lower-case only: neither, the standard
    [InlineData("prvs=abc@x", "prvs=abc@x")]                                  // not three parts
    [InlineData("prvs=a=b=c@x", "prvs=a=b=c@x")]                              // four parts
    [InlineData("prvs=1234567890=user=@x", "user@x")]                         // trailing empty field dropped, as Perl's split
    [InlineData("PRVS=1234567890=user@x", "PRVS=#=user@x")]                   // the prefix is case-sensitive
    public void NormalizeSender_Batv(string sender, string expected)
    {
        Assert.Equal(expected, TripletKey.NormalizeSender(sender));
    }

    [Theory]
    [InlineData("bounce-123-456@lists.example", "bounce-#-#@lists.example")]
    [InlineData("123@x", "#@x")]
    [InlineData("a.12.b@x", "a.#.b@x")]
    [InlineData("user123@x", "user123@x")]        // digits inside a word stay
    [InlineData("a_12@x", "a_12@x")]              // '_' is a word character
    [InlineData("12ab-34@x", "12ab-#@x")]
    [InlineData("user+list-123@x", "user@x")]     // +extension dropped first
    [InlineData("u+a+b@x", "u@x")]
    [InlineData("a@b@c", "a@b@c")]                // split at the first '@'
    [InlineData("@x", "@x")]
    [InlineData("user@", "user@")]
    [InlineData("MAILER-DAEMON", "MAILER-DAEMON")] // no '@': kept as is, no substitutions
    [InlineData("123", "123")]
    [InlineData("", "")]
    [InlineData("jörg.42@exämple.org", "jörg.#@exämple.org")]
    public void NormalizeSender_VerpAndExtensions(string sender, string expected)
    {
        Assert.Equal(expected, TripletKey.NormalizeSender(sender));
    }

    [Fact]
    public void Build_BounceSender_LeavesAnEmptyMiddle()
    {
        Assert.Equal("192.0.2.0//b@y", Key("192.0.2.7", "", "b@y"));
    }

    [Fact]
    public void Build_RecipientIsOnlyLowered()
    {
        Assert.Equal("192.0.2.0/a@x/user+123@y", Key("192.0.2.7", "a@x", "User+123@Y"));
    }

    [Fact]
    public void AsciiLower_LeavesNonAsciiAlone()
    {
        Assert.Equal("äbc@ÄÖ.example", TripletKey.AsciiLower("äBC@ÄÖ.EXAMPLE"));
    }

    [Theory]
    [InlineData("192.0.2.7", true)]
    [InlineData("2001:db8::1", true)]
    [InlineData("", false)]
    [InlineData("unknown", false)]
    [InlineData("1.2.3", false)]
    [InlineData("1.2.3.256", false)]
    [InlineData("1.2.3.4.5", false)]
    [InlineData("0x7f.0.0.1", false)]
    [InlineData("1..2.3", false)]
    [InlineData("2001:db8::1::2", false)]
    [InlineData("::ffff:192.0.2.7", true)]
    public void ClientAddress_TryParse_IsStrict(string text, bool valid)
    {
        Assert.Equal(valid, ClientAddress.TryParse(text, out _));
    }
}
