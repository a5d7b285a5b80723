using System.Text.RegularExpressions;

namespace Postgrey.Core.Whitelists;

/// <summary>A <c>/regex/</c> whitelist entry: case-insensitive, as postgrey's <c>qr{...}i</c>, and with
/// a match timeout so that a pathological pattern cannot stall the server.</summary>
internal static class WhitelistRegex
{
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromMilliseconds(100);

    /// <summary>Returns the regex body of a <c>/\S+/</c> line, or null.</summary>
    public static string? Body(string entry)
    {
        if (entry.Length >= 3 && entry[0] == '/' && entry[^1] == '/')
        {
            string body = entry[1..^1];
            foreach (char c in body)
            {
                if (char.IsWhiteSpace(c))
                {
                    return null;
                }
            }
            return body;
        }
        return null;
    }

    /// <summary>For a <c>/regex/</c> entry: true, with the compiled regex added to
    /// <paramref name="regexes"/> or the reason it does not compile in <paramref name="problem"/>.
    /// False for any other entry.</summary>
    public static bool TryAdd(string entry, List<Regex> regexes, out string? problem)
    {
        problem = null;
        if (Body(entry) is not { } body)
        {
            return false;
        }
        try
        {
            regexes.Add(new Regex(body, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, MatchTimeout));
        }
        catch (ArgumentException ex)
        {
            problem = $"invalid regular expression: {ex.Message}";
        }
        return true;
    }

    /// <summary>A match that ran past its timeout counts as no match.</summary>
    public static bool IsMatch(Regex regex, string input)
    {
        try
        {
            return regex.IsMatch(input);
        }
        catch (RegexMatchTimeoutException)
        {
            return false;
        }
    }
}
