using System.Net;
using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Tests.Whitelists;

/// <summary>Entries one at a time, for explain and check-whitelists: the same meaning as in the
/// whole whitelist the service builds.</summary>
public class WhitelistEntriesTests
{
    private static IReadOnlyList<WhitelistEntry> Read(string text) =>
        WhitelistEntries.Read(new StringReader(text), "f", new List<WhitelistWarning>());

    [Fact]
    public void Read_KeepsFileAndLine_DropsCommentsAndBlanks()
    {
        var entries = Read("# head\n\n  example.com  # trailing\n192.0.2.0/24\n");
        Assert.Equal([new WhitelistEntry("f", 3, "example.com"), new WhitelistEntry("f", 4, "192.0.2.0/24")], entries);
    }

    [Fact]
    public void FindClient_NameMatchesBeforeAddressMatches_AsTheEngineChecks()
    {
        var entries = Read("192.0.2.0/24\n/^mx\\d+\\.example\\.net$/\nexample.net\n");
        Assert.Equal(2, WhitelistEntries.FindClient(entries, "mx1.example.net", IPAddress.Parse("192.0.2.9"))!.Line);
        Assert.Equal(3, WhitelistEntries.FindClient(entries, "smtp.example.net", IPAddress.Parse("192.0.2.9"))!.Line);
        Assert.Equal(1, WhitelistEntries.FindClient(entries, "unknown", IPAddress.Parse("192.0.2.9"))!.Line);
        Assert.Null(WhitelistEntries.FindClient(entries, "unknown", IPAddress.Parse("198.51.100.1")));
    }

    [Fact]
    public void FindRecipient_FirstMatchingEntry()
    {
        var entries = Read("bad entry here\npostmaster@\nexample.org\n");
        Assert.Equal(2, WhitelistEntries.FindRecipient(entries, "postmaster@example.org")!.Line);
        Assert.Equal(3, WhitelistEntries.FindRecipient(entries, "x@sub.example.org")!.Line);
        Assert.Null(WhitelistEntries.FindRecipient(entries, "x@example.com"));
    }

    [Fact]
    public void Client_BadEntry_GivesTheServicesReason()
    {
        Assert.Null(WhitelistEntries.Client(new WhitelistEntry("f", 1, "192.0.2.0/40"), out string? problem));
        Assert.Equal("invalid network prefix", problem);
    }

    [Theory]
    [InlineData("192.0.2.5", "192.0.2.5", 32)]
    [InlineData("192.0.2", "192.0.2.0", 24)]
    [InlineData("10.1", "10.1.0.0", 16)]
    [InlineData("192.0.2.0/25", "192.0.2.0", 25)]
    [InlineData("2001:db8::/32", "2001:db8::", 32)]
    [InlineData("::ffff:192.0.2.0/120", "192.0.2.0", 24)]
    public void TryParseNetwork_TheNetworkTheServiceAdds(string entry, string network, int prefix)
    {
        Assert.True(ClientWhitelist.Builder.TryParseNetwork(entry, out IPAddress parsed, out int bits));
        Assert.Equal(IPAddress.Parse(network), parsed);
        Assert.Equal(prefix, bits);
    }

    [Theory]
    [InlineData("example.com")]
    [InlineData("/192\\.0\\.2\\.\\d+/")]
    [InlineData("192.0.2.0/40")]
    public void TryParseNetwork_NotANetwork_False(string entry) =>
        Assert.False(ClientWhitelist.Builder.TryParseNetwork(entry, out _, out _));

    [Fact]
    public void FindRegexTimeout_CatastrophicBacktracking_FoundOnlyOnTheBacktrackingEngine()
    {
        Assert.NotNull(WhitelistEntries.FindRegexTimeout("/^(?=(a+)+$)b/"));
        Assert.Null(WhitelistEntries.FindRegexTimeout("/^(a+)+$/")); // linear engine: no timeout at all
        Assert.Null(WhitelistEntries.FindRegexTimeout("/^(?=mx)mx\\d+\\.example\\.net$/"));
        Assert.Null(WhitelistEntries.FindRegexTimeout("example.com"));
    }
}
