using Postgrey.Core.Greylisting;
using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Tests.Whitelists;

public class ClientWhitelistTests
{
    private static (ClientWhitelist List, List<WhitelistWarning> Warnings) Build(string text)
    {
        var warnings = new List<WhitelistWarning>();
        var list = new ClientWhitelist.Builder().Add(new StringReader(text), "clients.txt", warnings).Build();
        return (list, warnings);
    }

    private static bool Address(ClientWhitelist list, string address)
    {
        Assert.True(ClientAddress.TryParse(address, out var ip));
        return list.MatchesAddress(ip);
    }

    [Theory]
    [InlineData("example.com", true)]
    [InlineData("mx.example.com", true)]
    [InlineData("a.b.EXAMPLE.com", true)]
    [InlineData("badexample.com", false)]
    [InlineData("example.com.evil", false)]
    [InlineData("unknown", false)]
    public void MatchesName_HostEntry_MatchesTheNameAndItsSubdomains(string clientName, bool expected)
    {
        var (list, _) = Build("example.com\n");
        Assert.Equal(expected, list.MatchesName(clientName));
    }

    [Fact]
    public void MatchesName_Regex_IsCaseInsensitiveAndUnanchored()
    {
        var (list, _) = Build("/^mail\\d+\\.outbound\\./\n");
        Assert.True(list.MatchesName("MAIL12.Outbound.example.net"));
        Assert.False(list.MatchesName("xmail12.outbound.example.net"));
        Assert.False(list.MatchesName("mail.outbound.example.net"));
    }

    [Theory]
    [InlineData("192.0.2.7", "192.0.2.7", true)]
    [InlineData("192.0.2.7", "192.0.2.8", false)]
    [InlineData("192.0.2.0/25", "192.0.2.127", true)]
    [InlineData("192.0.2.0/25", "192.0.2.128", false)]
    [InlineData("192.0.2.77/24", "192.0.2.1", true)]   // host bits are ignored, as NetAddr::IP's within
    [InlineData("192.0.2", "192.0.2.255", true)]        // a.b.c: the /24
    [InlineData("192.0.2", "192.0.3.1", false)]
    [InlineData("10.20", "10.20.255.1", true)]          // a.b: the /16 postgrey documents
    [InlineData("10.20", "10.21.0.1", false)]
    [InlineData("2001:db8::/32", "2001:db8:ffff::1", true)]
    [InlineData("2001:db8::/32", "2001:db9::1", false)]
    [InlineData("2001:db8::1", "2001:db8::1", true)]
    [InlineData("2001:db8::1", "2001:db8::2", false)]
    [InlineData("192.0.2.0/24", "::ffff:192.0.2.9", true)] // mapped clients are IPv4 clients
    public void MatchesAddress_NetworkEntries(string entry, string client, bool expected)
    {
        var (list, warnings) = Build(entry + "\n");
        Assert.Empty(warnings);
        Assert.Equal(expected, Address(list, client));
    }

    [Fact]
    public void Add_CommentsBlankLinesAndSpaces_AreHandledAsPostgreyDoes()
    {
        var (list, warnings) = Build("# a comment\n\n   example.org   # trailing comment\n\t192.0.2.1\t\n");
        Assert.Empty(warnings);
        Assert.True(list.MatchesName("mx.example.org"));
        Assert.True(Address(list, "192.0.2.1"));
        Assert.Equal(1, list.NameCount);
        Assert.Equal(1, list.NetworkCount);
    }

    [Fact]
    public void Add_BadLines_AreWarnedWithFileAndLineAndSkipped()
    {
        var (list, warnings) = Build("good.example\nnot a hostname\n192.0.2.1/33\n2001:db8::zz\n/unbalanced(/\n");
        Assert.Equal(
            [
                "clients.txt line 2: doesn't look like a hostname",
                "clients.txt line 3: invalid network prefix",
                "clients.txt line 4: invalid IP address",
            ],
            warnings.Take(3).Select(w => w.ToString()));
        Assert.StartsWith("clients.txt line 5: invalid regular expression", warnings[3].ToString(), StringComparison.Ordinal);
        Assert.True(list.MatchesName("good.example"));
    }

    [Fact]
    public void Add_ThreeDigitPrefix_IsAHostNameAsInPostgrey()
    {
        // "1.2.3.4/100" fails postgrey's IPv4 pattern (\d{1,2}) and has no ':', so it is a name.
        var (list, warnings) = Build("1.2.3.4/100\n");
        Assert.Empty(warnings);
        Assert.True(list.MatchesName("1.2.3.4/100"));
    }

    [Fact]
    public void MatchesName_PathologicalRegex_TimesOutAsNoMatch()
    {
        var (list, _) = Build("/^(a+)+$/\n");
        Assert.False(list.MatchesName(new string('a', 40) + "!"));
    }
}

public class ShippedClientWhitelistTests
{
    [Fact]
    public void ShippedList_ParsesWithoutWarningsAndCoversTheBigPools()
    {
        var warnings = new List<WhitelistWarning>();
        string path = Path.Combine(AppContext.BaseDirectory, "etc", "whitelist_clients");
        var list = new ClientWhitelist.Builder().Add(new StringReader(File.ReadAllText(path)), path, warnings).Build();
        Assert.Empty(warnings);
        Assert.True(list.MatchesName("mail-wr1-f54.google.com"));
        Assert.True(list.MatchesName("mail-db5eur01on0102.outbound.protection.outlook.com"));
        Assert.True(list.MatchesName("a8-31.smtp-out.amazonses.com"));
        Assert.False(list.MatchesName("mx.example.net"));
        Assert.False(list.MatchesName("unknown"));
    }
}
