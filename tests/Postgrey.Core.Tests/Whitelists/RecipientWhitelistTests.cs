using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Tests.Whitelists;

public class RecipientWhitelistTests
{
    private static RecipientWhitelist Build(string text, List<WhitelistWarning>? warnings = null) =>
        new RecipientWhitelist.Builder().Add(new StringReader(text), "recipients.txt", warnings ?? []).Build();

    [Theory]
    [InlineData("postmaster@example.org", true)]
    [InlineData("POSTMASTER@EXAMPLE.ORG", true)]
    [InlineData("postmaster+tag@example.org", true)]
    [InlineData("postmaster+@example.org", false)]   // the extension has at least one character
    [InlineData("postmaster@sub.example.org", false)]
    [InlineData("postmasters@example.org", false)]
    [InlineData("xpostmaster@example.org", false)]
    public void Matches_UserAtDomain(string recipient, bool expected)
    {
        Assert.Equal(expected, Build("postmaster@example.org\n").Matches(recipient));
    }

    [Theory]
    [InlineData("abuse@example.org", true)]
    [InlineData("Abuse@anything.example", true)]
    [InlineData("abuse+x@y", true)]
    [InlineData("abuser@example.org", false)]
    [InlineData("noabuse@example.org", false)]
    public void Matches_UserAt_AnyDomain(string recipient, bool expected)
    {
        Assert.Equal(expected, Build("abuse@\n").Matches(recipient));
    }

    [Theory]
    [InlineData("a@example.org", true)]
    [InlineData("a@mail.example.org", true)]
    [InlineData("a@badexample.org", false)]
    [InlineData("example.org", false)]
    public void Matches_Domain_AndItsSubdomains(string recipient, bool expected)
    {
        Assert.Equal(expected, Build("example.org\n").Matches(recipient));
    }

    [Fact]
    public void Matches_Regex_OnTheWholeAddress()
    {
        var list = Build("/^list-.*@lists\\./\n");
        Assert.True(list.Matches("List-Announce@lists.example.org"));
        Assert.False(list.Matches("user@lists.example.org"));
    }

    [Fact]
    public void Add_LineWithSpaces_IsWarned()
    {
        var warnings = new List<WhitelistWarning>();
        Build("ok@\nnot an address\n", warnings);
        Assert.Equal("recipients.txt line 2: doesn't look like an address", Assert.Single(warnings).ToString());
    }

    [Fact]
    public void Matches_ShippedDefaults()
    {
        var list = Build(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "etc", "whitelist_recipients")));
        Assert.True(list.Matches("postmaster@example.org"));
        Assert.True(list.Matches("abuse@example.org"));
        Assert.False(list.Matches("user@example.org"));
    }
}
