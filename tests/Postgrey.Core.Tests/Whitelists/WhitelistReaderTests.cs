using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Tests.Whitelists;

/// <summary>What one whitelist file may cost: lines and files are capped.</summary>
public class WhitelistReaderTests
{
    /// <summary>An endless file of one character, as /dev/zero reads.</summary>
    private sealed class EndlessReader(char c) : TextReader
    {
        public long Served { get; private set; }

        public override int Read(char[] buffer, int index, int count)
        {
            Array.Fill(buffer, c, index, count);
            Served += count;
            return count;
        }

        public override int Read() => c;

        public override int Peek() => c;
    }

    [Fact]
    public void Entries_LineEndsAndComments_AsTextReaderReadLine()
    {
        var warnings = new List<WhitelistWarning>();
        var entries = WhitelistReader.Entries(new StringReader("a.example\r\n# comment\n\n  b.example  # why\rc.example\n\nd.example"), "f", warnings);
        Assert.Equal([(1, "a.example"), (4, "b.example"), (5, "c.example"), (7, "d.example")], entries);
        Assert.Empty(warnings);
    }

    [Fact]
    public void Entries_LineAtTheLimit_IsKept_OneLonger_IsSkippedWithAWarning()
    {
        var warnings = new List<WhitelistWarning>();
        string atLimit = new string('a', WhitelistReader.MaxLineChars);
        string text = $"{atLimit}\n{atLimit}b\nafter.example\n";
        var entries = WhitelistReader.Entries(new StringReader(text), "clients", warnings);
        Assert.Equal([(1, atLimit), (3, "after.example")], entries);
        Assert.Equal($"clients line 2: longer than {WhitelistReader.MaxLineChars} characters; skipped", Assert.Single(warnings).ToString());
    }

    [Fact]
    public void Entries_EndlessFile_StopsAtTheFileLimitWithoutKeepingTheLine()
    {
        var reader = new EndlessReader('\0');
        var warnings = new List<WhitelistWarning>();
        var error = Assert.Throws<WhitelistTooLargeException>(() => WhitelistReader.Entries(reader, "/dev/zero", warnings));
        Assert.StartsWith("larger than 32 MiB", error.Message, StringComparison.Ordinal);
        Assert.True(reader.Served <= WhitelistReader.MaxFileChars + 8192, $"{reader.Served} read");
    }

    [Fact]
    public void Add_FileOverTheLimit_AddsNoneOfItsEntries()
    {
        var builder = new ClientWhitelist.Builder();
        var warnings = new List<WhitelistWarning>();
        // Good entries first, then endless lines: nothing of the file is used.
        var reader = new ConcatReader(new StringReader("good.example\n"), new EndlessReader('\n'));
        Assert.Throws<WhitelistTooLargeException>(() => builder.Add(reader, "clients", warnings));
        Assert.False(builder.Build().MatchesName("good.example"));
    }

    private sealed class ConcatReader(TextReader first, TextReader second) : TextReader
    {
        public override int Read(char[] buffer, int index, int count)
        {
            int n = first.Read(buffer, index, count);
            return n > 0 ? n : second.Read(buffer, index, count);
        }
    }
}
