using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Tests.Whitelists;

/// <summary>Whitelist regexes run on the connection loop against names an attacker picks.</summary>
public class WhitelistRegexTests
{
    private static string RepositoryFile(string relative)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Postgrey.sln")))
        {
            dir = dir.Parent;
        }
        return Path.Combine(dir!.FullName, relative);
    }

    private static List<WhitelistRegex> Compile(string path, List<WhitelistWarning> warnings)
    {
        var regexes = new List<WhitelistRegex>();
        using var reader = new StreamReader(path);
        foreach (var (line, entry) in WhitelistReader.Entries(reader, path, warnings))
        {
            if (WhitelistRegex.TryAdd(entry, new WhitelistEntryContext(path, line, warnings, null), regexes, out string? problem))
            {
                Assert.Null(problem);
            }
        }
        return regexes;
    }

    [Theory]
    [InlineData("etc/whitelist_clients")]
    [InlineData("etc/whitelist_recipients")]
    public void TryAdd_ShippedWhitelists_AllCompileForTheLinearEngine(string relative)
    {
        var warnings = new List<WhitelistWarning>();
        List<WhitelistRegex> regexes = Compile(RepositoryFile(relative), warnings);
        Assert.Empty(warnings);
        Assert.All(regexes, r => Assert.True(r.IsLinear, r.ToString()));
    }

    [Fact]
    public void TryAdd_DebiansWhitelistClients_AllCompileForTheLinearEngine()
    {
        Postgrey.Testing.Requires.Program("/etc/postgrey/whitelist_clients", "postgrey");
        var warnings = new List<WhitelistWarning>();
        List<WhitelistRegex> regexes = Compile("/etc/postgrey/whitelist_clients", warnings);
        Assert.Empty(warnings);
        Assert.True(regexes.Count >= 30, $"{regexes.Count} regexes"); // Debian's list has 34
        Assert.All(regexes, r => Assert.True(r.IsLinear, r.ToString()));
        // Its lazy quantifier: /^.*?.server.arvato-systems.de$/
        Assert.Contains(regexes, r => r.IsMatch("mx1.server.arvato-systems.de"));
    }

    [Fact]
    public void IsMatch_NestedQuantifierAgainstACraftedName_AnswersWithoutTimingOut()
    {
        var timeouts = new List<WhitelistWarning>();
        var list = new ClientWhitelist.Builder { OnRegexTimeout = timeouts.Add }
            .Add(new StringReader("/^(a+)+$/\n"), "clients", timeouts).Build();
        string crafted = new string('a', 500) + "!";
        for (int i = 0; i < 20; i++)
        {
            Assert.False(list.MatchesName(crafted));
        }
        Assert.True(list.MatchesName(new string('a', 500)));
        Assert.Empty(timeouts); // the backtracking engine times out on the first one (100 ms)
    }

    [Fact]
    public void TryAdd_Backreference_FallsBackToBacktrackingWithAWarningNamingFileAndLine()
    {
        var warnings = new List<WhitelistWarning>();
        var list = new ClientWhitelist.Builder().Add(new StringReader("# doubled labels\n/^(\\w+)\\.\\1\\.example$/\n"), "clients", warnings).Build();
        Assert.True(list.MatchesName("mx.mx.example"));
        Assert.False(list.MatchesName("mx.my.example"));
        WhitelistWarning warning = Assert.Single(warnings);
        Assert.Equal(2, warning.Line);
        Assert.StartsWith("clients line 2: regex needs the backtracking engine", warning.ToString(), StringComparison.Ordinal);
        Assert.EndsWith("with a 10 ms match timeout", warning.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void IsMatch_BacktrackingEntryTimingOut_IsNoMatchAndSaidOncePerEntry()
    {
        var warnings = new List<WhitelistWarning>();
        var timeouts = new List<WhitelistWarning>();
        // A lookahead keeps it off the linear engine; the nested quantifier makes it explode.
        var list = new RecipientWhitelist.Builder { OnRegexTimeout = timeouts.Add }
            .Add(new StringReader("postmaster@\n/^(?=a)(a+)+$/\n"), "recipients", warnings).Build();
        string crafted = new string('a', 200) + "!";
        for (int i = 0; i < 5; i++)
        {
            Assert.False(list.Matches(crafted));
        }
        Assert.True(list.Matches("postmaster@example.org"));
        WhitelistWarning timeout = Assert.Single(timeouts);
        Assert.Equal("recipients line 2: regex timed out after 10 ms and counts as no match (said once per entry)", timeout.ToString());
    }
}
