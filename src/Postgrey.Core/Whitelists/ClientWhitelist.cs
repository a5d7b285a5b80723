using System.Net;
using System.Net.Sockets;

namespace Postgrey.Core.Whitelists;

/// <summary>
/// The client whitelist: host names (the name and its subdomains), <c>/regex/</c> entries matched
/// against <c>client_name</c>, and IP networks matched against <c>client_address</c>. Immutable:
/// a reload builds a new one.
/// </summary>
public sealed class ClientWhitelist
{
    private readonly HashSet<string> _names;
    private readonly HashSet<string>.AlternateLookup<ReadOnlySpan<char>> _nameLookup;
    private readonly WhitelistRegex[] _regexes;
    private readonly NetworkSet _networks;

    private ClientWhitelist(HashSet<string> names, WhitelistRegex[] regexes, NetworkSet networks)
    {
        _names = names;
        _nameLookup = names.GetAlternateLookup<ReadOnlySpan<char>>();
        _regexes = regexes;
        _networks = networks;
    }

    public static ClientWhitelist Empty { get; } = new Builder().Build();

    public int NameCount => _names.Count;

    public int RegexCount => _regexes.Length;

    public int NetworkCount => _networks.Count;

    /// <summary>postgrey's <c>(?:^|\.)\Qentry\E$</c>i for each name, and each regex.</summary>
    public bool MatchesName(string clientName)
    {
        ArgumentNullException.ThrowIfNull(clientName);
        if (_names.Count > 0)
        {
            ReadOnlySpan<char> name = clientName;
            for (int i = 0; i < name.Length; i++)
            {
                if ((i == 0 || name[i - 1] == '.') && _nameLookup.Contains(name[i..]))
                {
                    return true;
                }
            }
        }
        foreach (WhitelistRegex regex in _regexes)
        {
            if (regex.IsMatch(clientName))
            {
                return true;
            }
        }
        return false;
    }

    public bool MatchesAddress(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        return _networks.Contains(address);
    }

    /// <summary>Collects entries from one or more files.</summary>
    public sealed class Builder
    {
        private readonly HashSet<string> _names = new(AsciiIgnoreCaseComparer.Instance);
        private readonly List<WhitelistRegex> _regexes = [];
        private readonly NetworkSet _networks = new();

        /// <summary>Told, once per entry, when a regex entry's match timed out (it counted as
        /// no match); called on the thread that matched.</summary>
        public Action<WhitelistWarning>? OnRegexTimeout { get; init; }

        /// <summary>Adds every entry of <paramref name="reader"/>; lines that cannot be used are
        /// reported in <paramref name="warnings"/> and skipped.</summary>
        public Builder Add(TextReader reader, string source, ICollection<WhitelistWarning> warnings)
        {
            WhitelistReader.AddAll(reader, source, warnings, AddEntry, OnRegexTimeout);
            return this;
        }

        /// <summary>Adds one entry; returns why it was refused, or null.</summary>
        public string? AddEntry(string entry) => AddEntry(entry, new WhitelistEntryContext("", 0, null, OnRegexTimeout));

        internal string? AddEntry(string entry, WhitelistEntryContext context)
        {
            ArgumentNullException.ThrowIfNull(entry);
            if (WhitelistRegex.TryAdd(entry, context, _regexes, out string? problem))
            {
                return problem;
            }

            EntryKind kind = Classify(entry);
            if (kind == EntryKind.HostName)
            {
                _names.Add(entry);
                return null;
            }
            if (kind == EntryKind.Invalid)
            {
                return "doesn't look like a hostname";
            }
            if (ParseNetwork(entry, kind, out IPAddress network, out int prefix) is { } bad)
            {
                return bad;
            }
            _networks.Add(network, prefix);
            return null;
        }

        public ClientWhitelist Build() =>
            new(new HashSet<string>(_names, AsciiIgnoreCaseComparer.Instance), [.. _regexes], _networks);

        /// <summary>The network an address entry stands for (<c>a.b.c</c> is a /24, an IPv4-mapped
        /// IPv6 network its IPv4 one), as it is added; false for names, regexes and bad entries.</summary>
        public static bool TryParseNetwork(string entry, out IPAddress network, out int prefix)
        {
            ArgumentNullException.ThrowIfNull(entry);
            network = IPAddress.None;
            prefix = 0;
            return WhitelistRegex.Body(entry) is null
                && Classify(entry) is not (EntryKind.HostName or EntryKind.Invalid) and var kind
                && ParseNetwork(entry, kind, out network, out prefix) is null;
        }

        private static string? ParseNetwork(string entry, EntryKind kind, out IPAddress network, out int prefix) => kind switch
        {
            EntryKind.IPv4 => ParseNetwork(entry, AddressFamily.InterNetwork, 32, out network, out prefix),
            EntryKind.IPv4Slash24 => ParseNetwork(entry + ".0", AddressFamily.InterNetwork, 24, out network, out prefix),
            // postgrey documents a.b as a /16 (but builds a.b.0.0/24); we do what it documents.
            EntryKind.IPv4Slash16 => ParseNetwork(entry + ".0.0", AddressFamily.InterNetwork, 16, out network, out prefix),
            _ => ParseNetwork(entry, AddressFamily.InterNetworkV6, 128, out network, out prefix),
        };

        private static string? ParseNetwork(string text, AddressFamily family, int defaultPrefix, out IPAddress network, out int prefix)
        {
            network = IPAddress.None;
            prefix = defaultPrefix;
            int slash = text.IndexOf('/', StringComparison.Ordinal);
            string address = text;
            if (slash >= 0)
            {
                address = text[..slash];
                if (!int.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out prefix)
                    || prefix > (family == AddressFamily.InterNetwork ? 32 : 128))
                {
                    return "invalid network prefix";
                }
            }
            if (!IPAddress.TryParse(address, out IPAddress? ip) || ip.AddressFamily != family)
            {
                return "invalid IP address";
            }
            if (ip.IsIPv4MappedToIPv6)
            {
                // Clients with mapped addresses are looked up as IPv4; keep entries consistent.
                ip = ip.MapToIPv4();
                prefix = Math.Max(0, prefix - 96);
            }
            network = ip;
            return null;
        }

        private enum EntryKind { Invalid, IPv4, IPv4Slash24, IPv4Slash16, IPv6, HostName }

        // The order of postgrey's checks: dotted quad (/M), a.b.c, a.b, anything with two ':', \S+.
        private static EntryKind Classify(string entry)
        {
            if (IsDigitGroups(entry, 4, allowPrefix: true))
            {
                return EntryKind.IPv4;
            }
            if (IsDigitGroups(entry, 3, allowPrefix: false))
            {
                return EntryKind.IPv4Slash24;
            }
            if (IsDigitGroups(entry, 2, allowPrefix: false))
            {
                return EntryKind.IPv4Slash16;
            }
            int firstColon = entry.IndexOf(':', StringComparison.Ordinal);
            if (firstColon >= 0 && entry.IndexOf(':', firstColon + 1) >= 0)
            {
                return EntryKind.IPv6;
            }
            return WhitelistReader.HasWhiteSpace(entry) ? EntryKind.Invalid : EntryKind.HostName;
        }

        // ^\d{1,3}(\.\d{1,3}){groups-1}(/\d{1,2})?$
        private static bool IsDigitGroups(string s, int groups, bool allowPrefix)
        {
            int i = 0;
            for (int g = 0; g < groups; g++)
            {
                if (g > 0)
                {
                    if (i >= s.Length || s[i] != '.')
                    {
                        return false;
                    }
                    i++;
                }
                int start = i;
                while (i < s.Length && char.IsAsciiDigit(s[i]) && i - start < 3)
                {
                    i++;
                }
                if (i == start)
                {
                    return false;
                }
            }
            if (allowPrefix && i < s.Length && s[i] == '/')
            {
                i++;
                int start = i;
                while (i < s.Length && char.IsAsciiDigit(s[i]) && i - start < 2)
                {
                    i++;
                }
                if (i == start)
                {
                    return false;
                }
            }
            return i == s.Length;
        }
    }
}
