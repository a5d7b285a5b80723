
namespace Postgrey.Core.Whitelists;

/// <summary>
/// The recipient whitelist, in postfix access(5) style: <c>user@domain</c> (also
/// <c>user+ext@domain</c>), <c>user@</c> (any domain), <c>domain</c> (and its subdomains),
/// <c>/regex/</c> on the whole address. Literal entries are matched without regexes, with the
/// semantics of the patterns postgrey builds for them. Immutable: a reload builds a new one.
/// </summary>
public sealed class RecipientWhitelist
{
    private readonly (string User, string? Domain)[] _addresses;
    private readonly HashSet<string> _domains;
    private readonly HashSet<string>.AlternateLookup<ReadOnlySpan<char>> _domainLookup;
    private readonly WhitelistRegex[] _regexes;

    private RecipientWhitelist((string, string?)[] addresses, HashSet<string> domains, WhitelistRegex[] regexes)
    {
        _addresses = addresses;
        _domains = domains;
        _domainLookup = domains.GetAlternateLookup<ReadOnlySpan<char>>();
        _regexes = regexes;
    }

    public static RecipientWhitelist Empty { get; } = new Builder().Build();

    public int Count => _addresses.Length + _domains.Count + _regexes.Length;

    public bool Matches(string recipient)
    {
        ArgumentNullException.ThrowIfNull(recipient);
        ReadOnlySpan<char> r = recipient;
        foreach (var (user, domain) in _addresses)
        {
            if (MatchesAddress(r, user, domain))
            {
                return true;
            }
        }
        if (_domains.Count > 0)
        {
            // (?:\@|\.)\Qdomain\E$
            for (int i = 1; i < r.Length; i++)
            {
                if (r[i - 1] is '@' or '.' && _domainLookup.Contains(r[i..]))
                {
                    return true;
                }
            }
        }
        foreach (WhitelistRegex regex in _regexes)
        {
            if (regex.IsMatch(recipient))
            {
                return true;
            }
        }
        return false;
    }

    // ^\Quser\E(?:\+[^@]+)?\@\Qdomain\E$  (or, for "user@", without the domain part and the $)
    private static bool MatchesAddress(ReadOnlySpan<char> r, string user, string? domain)
    {
        if (!AsciiText.StartsWithIgnoreCase(r, user) || r.Length == user.Length)
        {
            return false;
        }
        int at;
        if (r[user.Length] == '@')
        {
            at = user.Length;
        }
        else if (r[user.Length] == '+')
        {
            int next = r[(user.Length + 1)..].IndexOf('@');
            if (next <= 0)
            {
                return false; // the extension must be one or more characters other than '@'
            }
            at = user.Length + 1 + next;
        }
        else
        {
            return false;
        }
        return domain is null || AsciiText.EqualsIgnoreCase(r[(at + 1)..], domain);
    }

    public sealed class Builder
    {
        private readonly List<(string, string?)> _addresses = [];
        private readonly HashSet<string> _domains = new(AsciiIgnoreCaseComparer.Instance);
        private readonly List<WhitelistRegex> _regexes = [];

        /// <summary>Told, once per entry, when a regex entry's match timed out (it counted as
        /// no match); called on the thread that matched.</summary>
        public Action<WhitelistWarning>? OnRegexTimeout { get; init; }

        public Builder Add(TextReader reader, string source, ICollection<WhitelistWarning> warnings)
        {
            WhitelistReader.AddAll(reader, source, warnings, AddEntry, OnRegexTimeout);
            return this;
        }

        public string? AddEntry(string entry) => AddEntry(entry, new WhitelistEntryContext("", 0, null, OnRegexTimeout));

        internal string? AddEntry(string entry, WhitelistEntryContext context)
        {
            ArgumentNullException.ThrowIfNull(entry);
            if (WhitelistRegex.TryAdd(entry, context, _regexes, out string? problem))
            {
                return problem;
            }
            if (WhitelistReader.HasWhiteSpace(entry))
            {
                return "doesn't look like an address";
            }
            int at = entry.IndexOf('@', StringComparison.Ordinal);
            if (at < 0)
            {
                _domains.Add(entry);
            }
            else if (at == entry.Length - 1)
            {
                _addresses.Add((entry[..at], null));
            }
            else
            {
                _addresses.Add((entry[..at], entry[(at + 1)..]));
            }
            return null;
        }

        public RecipientWhitelist Build() =>
            new([.. _addresses], new HashSet<string>(_domains, AsciiIgnoreCaseComparer.Instance), [.. _regexes]);
    }
}
