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

    public static Regex? TryCompile(string body, out string? error)
    {
        try
        {
            error = null;
            return new Regex(body, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, MatchTimeout);
        }
        catch (ArgumentException ex)
        {
            error = ex.Message;
            return null;
        }
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
