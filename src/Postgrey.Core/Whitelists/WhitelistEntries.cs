using System.Net;

namespace Postgrey.Core.Whitelists;

/// <summary>One entry of a whitelist file, and where it stands.</summary>
public sealed record WhitelistEntry(string Source, int Line, string Text)
{
    public override string ToString() => $"{Source} line {Line}: {Text}";
}

/// <summary>
/// Whitelist entries one at a time, for the admin's tools (<c>postgrey explain</c>,
/// <c>postgrey check-whitelists</c>): which entry matched, what an entry means, whether it
/// loads. Each entry is judged by a whitelist of that one entry, built and matched by the
/// service's own code, so that the answers cannot drift from the service's. A whitelist per
/// entry is slow: never on the request path.
/// </summary>
public static class WhitelistEntries
{
    /// <summary>The entries of a file as the service reads them (comments and blanks dropped);
    /// overlong lines go to <paramref name="warnings"/>.</summary>
    public static IReadOnlyList<WhitelistEntry> Read(TextReader reader, string source, ICollection<WhitelistWarning> warnings) =>
        [.. WhitelistReader.Entries(reader, source, warnings).Select(e => new WhitelistEntry(source, e.Line, e.Entry))];

    /// <summary>A client whitelist of <paramref name="entry"/> alone, or null with the reason the
    /// service would skip it. Notes on an entry it uses (a regex on the backtracking engine) go to
    /// <paramref name="warnings"/>, a match that times out to <paramref name="onRegexTimeout"/>.</summary>
    public static ClientWhitelist? Client(WhitelistEntry entry, out string? problem, ICollection<WhitelistWarning>? warnings = null, Action<WhitelistWarning>? onRegexTimeout = null)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var builder = new ClientWhitelist.Builder();
        problem = builder.AddEntry(entry.Text, new WhitelistEntryContext(entry.Source, entry.Line, warnings, onRegexTimeout));
        return problem is null ? builder.Build() : null;
    }

    /// <summary>As <see cref="Client"/>, for the recipient whitelist.</summary>
    public static RecipientWhitelist? Recipient(WhitelistEntry entry, out string? problem, ICollection<WhitelistWarning>? warnings = null, Action<WhitelistWarning>? onRegexTimeout = null)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var builder = new RecipientWhitelist.Builder();
        problem = builder.AddEntry(entry.Text, new WhitelistEntryContext(entry.Source, entry.Line, warnings, onRegexTimeout));
        return problem is null ? builder.Build() : null;
    }

    /// <summary>The entry that whitelists the client, in the engine's order (any entry matching
    /// the name before any matching the address), or null.</summary>
    public static WhitelistEntry? FindClient(IEnumerable<WhitelistEntry> entries, string clientName, IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var usable = entries.Select(e => (Entry: e, List: Client(e, out _))).Where(x => x.List is not null).ToList();
        return usable.FirstOrDefault(x => x.List!.MatchesName(clientName)).Entry
            ?? usable.FirstOrDefault(x => x.List!.MatchesAddress(address)).Entry;
    }

    /// <summary>The first entry that whitelists <paramref name="recipient"/>, or null.</summary>
    public static WhitelistEntry? FindRecipient(IEnumerable<WhitelistEntry> entries, string recipient)
    {
        ArgumentNullException.ThrowIfNull(entries);
        return entries.FirstOrDefault(e => Recipient(e, out _)?.Matches(recipient) == true);
    }

    /// <summary>
    /// For a <c>/regex/</c> entry the service runs on the backtracking engine: a name of at most
    /// 512 characters (Postfix's limit) on which it runs past its match timeout twice in a row,
    /// so that the service would count it as no match; null if none of the probes does (or the
    /// entry is not such a regex). The probes are runs of each character the pattern names,
    /// spoiled at the end: what makes nested quantifiers backtrack.
    /// </summary>
    public static string? FindRegexTimeout(string entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (WhitelistRegex.Body(entry) is not { } body)
        {
            return null;
        }
        var probes = body.Where(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_')
            .Select(char.ToLowerInvariant).Append('a').Distinct().Take(24)
            .Select(c => new string(c, 511) + "!");
        foreach (string probe in probes)
        {
            if (TimesOut(entry, probe) && TimesOut(entry, probe))
            {
                return probe;
            }
        }
        return null;

        static bool TimesOut(string entry, string probe)
        {
            bool timedOut = false;
            var regexes = new List<WhitelistRegex>();
            WhitelistRegex.TryAdd(entry, new WhitelistEntryContext("", 0, null, _ => timedOut = true), regexes, out _);
            if (regexes.Count == 0 || regexes[0].IsLinear)
            {
                return false;
            }
            regexes[0].IsMatch(probe);
            return timedOut;
        }
    }
}
