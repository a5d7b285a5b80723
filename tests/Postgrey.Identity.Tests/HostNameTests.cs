using System.Net;
using Postgrey.Core.Identity;
using Postgrey.Testing;

namespace Postgrey.Identity.Tests;

/// <summary>Rule 2: the registrable domain (Debian's Public Suffix List) of a verified name that
/// does not look dynamic.</summary>
public sealed class HostNameTests
{
    [Theory]
    [InlineData("mail-yw1-f170.google.com", "209.85.128.170", "google.com")]
    [InlineData("mail-db5eur03on2061.outbound.protection.outlook.com", "40.107.4.61", "outlook.com")]
    [InlineData("a4-11.smtp-out.amazonses.com", "54.240.4.11", "amazonses.com")]
    [InlineData("smtp.example.co.uk", "192.0.2.1", "example.co.uk")]
    [InlineData("MX1.Example.COM.", "192.0.2.1", "example.com")]
    [InlineData("mail.city.kawasaki.jp", "192.0.2.1", "city.kawasaki.jp")] // an exception rule (!city.kawasaki.jp)
    [InlineData("mx.shop.foo.kawasaki.jp", "192.0.2.1", "shop.foo.kawasaki.jp")] // a wildcard rule (*.kawasaki.jp)
    public void VerifiedStaticName_KeysOnItsRegistrableDomain(string name, string address, string expected)
    {
        Requires.Program(PublicSuffixList.DebianPath, "publicsuffix");
        using var harness = new Harness(dnsPort: 9); // rule 2 asks no DNS

        Assert.Equal(new KeyIdentity(KeyForm.Host, expected), harness.Resolver.HostIdentity(IPAddress.Parse(address), name));
    }

    [Theory]
    [InlineData("unknown", "192.0.2.1")] // Postfix: not forward-confirmed
    [InlineData("", "192.0.2.1")]
    [InlineData("co.uk", "192.0.2.1")] // a public suffix itself
    [InlineData("localhost", "127.0.0.1")]
    [InlineData("198.51.100.7", "198.51.100.7")]
    [InlineData("c-73-12-45-6.hsd1.ca.comcast.net", "73.12.45.6")] // the address, dashed
    [InlineData("6.45.12.73.example.net", "73.12.45.6")] // reversed
    [InlineData("host-203-0-113-7.example.net", "203.0.113.7")]
    [InlineData("p5B0C1234.dip0.t-ipconnect.de", "91.12.18.52")] // as 8 hex digits (and "dip")
    [InlineData("cpe-012034056078.example.net", "12.34.56.78")] // as 12 digits (and "cpe")
    [InlineData("dsl123.example.net", "192.0.2.1")]
    [InlineData("ppp-pool-17.example.net", "192.0.2.1")]
    [InlineData("static.vnpt.example.vn", "192.0.2.1")]
    [InlineData("dynamic-ip-adsl.example.in", "192.0.2.1")]
    [InlineData("client.example.net", "192.0.2.1")]
    [InlineData("2001-db8--abcd-1234.example.net", "2001:db8::abcd:1234")] // IPv6: the last 32 bits
    public void UnknownOrDynamicLookingName_IsNotAnIdentity(string name, string address)
    {
        Requires.Program(PublicSuffixList.DebianPath, "publicsuffix");
        using var harness = new Harness(dnsPort: 9);

        Assert.Null(harness.Resolver.HostIdentity(IPAddress.Parse(address), name));
    }

    [Fact]
    public void DebianList_IsRead()
    {
        Requires.Program(PublicSuffixList.DebianPath, "publicsuffix");
        PublicSuffixList list = PublicSuffixList.Load(PublicSuffixList.DebianPath);

        Assert.True(list.RuleCount > 5000, $"{list.RuleCount} rules");
        Assert.Equal("example.xn--p1ai", list.RegistrableDomain("mail.example.xn--p1ai")); // рф, kept as punycode
        Assert.Null(list.RegistrableDomain("foo.kawasaki.jp")); // a suffix by the wildcard rule
        Assert.Equal("city.kawasaki.jp", list.RegistrableDomain("www.city.kawasaki.jp")); // the exception
    }

    [Fact]
    public async Task MissingList_WarnsAndDisablesRule2_ButSpfStillWorks()
    {
        using var dns = new TestDnsServer();
        dns.Txt("pool.test", "v=spf1 ip4:203.0.113.0/24 -all");
        using var dir = new TempDirectory();
        string missing = dir.File("public_suffix_list.dat");
        using var harness = new Harness(dns.Port, publicSuffixList: missing);

        Assert.False(harness.Resolver.HostIdentity(IPAddress.Parse("192.0.2.1"), "smtp.example.com").HasValue);
        Assert.Contains(harness.Logs.Messages(), m => m.StartsWith($"can't read the Public Suffix List {missing} (", StringComparison.Ordinal));
        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("192.0.2.1", "x@example.com", "smtp.example.com"));
        Assert.Equal(KeyForm.Spf, (await harness.ResolveAsync("203.0.113.1", "x@pool.test", "smtp.example.com")).Form);
    }
}
