namespace Postgrey.Core.Whitelists;

/// <summary>Reads whitelist lines as postgrey does: '#' starts a comment anywhere, entries are
/// trimmed, blank lines skipped.</summary>
internal static class WhitelistReader
{
    public static IEnumerable<(int Line, string Entry)> Entries(TextReader reader)
    {
        int number = 0;
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            number++;
            int hash = line.IndexOf('#', StringComparison.Ordinal);
            if (hash >= 0)
            {
                line = line[..hash];
            }
            line = line.Trim();
            if (line.Length > 0)
            {
                yield return (number, line);
            }
        }
    }

    /// <summary>Feeds every entry to <paramref name="addEntry"/>, which returns why it refused one
    /// (reported with file and line) or null.</summary>
    public static void AddAll(TextReader reader, string source, ICollection<WhitelistWarning> warnings, Func<string, string?> addEntry)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(warnings);
        foreach (var (line, entry) in Entries(reader))
        {
            if (addEntry(entry) is { } problem)
            {
                warnings.Add(new WhitelistWarning(source, line, problem));
            }
        }
    }

    public static bool HasWhiteSpace(string s)
    {
        foreach (char c in s)
        {
            if (char.IsWhiteSpace(c))
            {
                return true;
            }
        }
        return false;
    }
}
