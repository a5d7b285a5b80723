using System.Text;
using System.Text.RegularExpressions;

namespace Postgrey.Tools;

/// <summary>One greylisted triplet of the mail log that never got through, as postgreyreport
/// keeps it: the key, how often it was refused, and the last refusal's client name and time.</summary>
internal sealed class FatalTriplet(string key)
{
    public string Key { get; } = key;

    public int Tries { get; set; }

    public string ClientName { get; set; } = "";

    /// <summary>The client's /24 (a.b.c.0) as postgreyreport guesses it, or the address itself.</summary>
    public string Subnet { get; set; } = "";

    /// <summary>The first 15 characters of the log line: its syslog time stamp.</summary>
    public string EntryTime { get; set; } = "";
}

/// <summary>
/// postgreyreport's reading of a mail log (Debian's /usr/bin/postgreyreport 1.14.3,
/// find_and_sort_fatal), rule for rule, so that its report comes out byte for byte: the
/// "reject: ... 450 ... Greylisted" lines, its own key (the address and the address's /24
/// with its older sender rewriting, not postgrey 1.37's key forms), and its test of the database:
/// a triplet is fatal when neither key is stored, or neither was seen over at least --delay.
/// Lines are bytes read as Latin-1 (one char a byte), as Perl reads them.
/// </summary>
internal sealed class GreylistedTriplets(Regex greylistText, ClientPatterns? match, ClientPatterns skip, bool skipPool, long delay, Func<string, (long First, long Last)?> find)
{
    // ' ([^\[\s]+)\[(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\]: 450 .+from=<([^>]+)> to=<([^>]+)>' with
    // Perl's byte-string classes spelled out: \s and \d are ASCII there, not Unicode.
    private static readonly Regex TripletLine = new(
        @" ([^\[ \t\n\r\f\v]+)\[([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\]: 450 .+from=<([^>]+)> to=<([^>]+)>",
        RegexOptions.CultureInvariant);

    private readonly Dictionary<string, FatalTriplet> _fatal = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (long First, long Last)?> _stored = new(StringComparer.Ordinal);

    /// <summary>Reads one log line (without its newline).</summary>
    public void Add(string line)
    {
        if (!line.Contains("reject: ", StringComparison.Ordinal) || !greylistText.IsMatch(line))
        {
            return;
        }
        Match m = TripletLine.Match(line);
        if (!m.Success)
        {
            return;
        }
        string clientName = m.Groups[1].Value, address = m.Groups[2].Value;
        string sender = SenderSubstitutions(m.Groups[3].Value);
        string[] octets = address.Split('.');
        string subnet = clientName == "unknown" || IsPool(clientName, octets) ? address : string.Join('.', octets[0], octets[1], octets[2], "0");
        string key = LowerAscii($"{address}/{sender}/{m.Groups[4].Value}");
        string subnetKey = LowerAscii($"{subnet}/{sender}/{m.Groups[4].Value}");

        if (match is not null && !match.Matches(address, clientName))
        {
            return;
        }
        if (skip.Matches(address, clientName) || (skipPool && IsPool(clientName, octets)) || !IsFatal(key, subnetKey))
        {
            return;
        }
        if (!_fatal.TryGetValue(key, out FatalTriplet? triplet))
        {
            _fatal.Add(key, triplet = new FatalTriplet(key));
        }
        triplet.Tries++;
        triplet.ClientName = clientName;
        triplet.Subnet = subnet;
        triplet.EntryTime = line.Length > 15 ? line[..15] : line;
    }

    /// <summary>
    /// The fatal triplets by client address, as postgreyreport sorts them (the four octets as
    /// bytes). Within one address postgreyreport's order is Perl's hash order, which changes from
    /// run to run; here it is the key's.
    /// </summary>
    public IReadOnlyList<FatalTriplet> Sorted() =>
        [.. _fatal.Values.OrderBy(t => AddressBytes(t.Key)).ThenBy(t => t.Key, StringComparer.Ordinal)];

    /// <summary>is_fatal_triplet: a missing key has no lapse; Perl compares that undef as 0.</summary>
    private bool IsFatal(string key, string subnetKey)
    {
        long? byAddress = Lapsed(key), bySubnet = Lapsed(subnetKey);
        if (byAddress is null && bySubnet is null)
        {
            return true; // neither stored: removed by maintenance, so never retried
        }
        return !((byAddress ?? 0) >= delay || (bySubnet ?? 0) >= delay);
    }

    private long? Lapsed(string key)
    {
        if (!_stored.TryGetValue(key, out (long First, long Last)? row))
        {
            // The key as the service stores it: the log's bytes taken as UTF-8, as it decodes
            // the attributes Postfix sends.
            row = find(Encoding.UTF8.GetString(Encoding.Latin1.GetBytes(key)));
            _stored.Add(key, row);
        }
        return row is { } r ? r.Last - r.First : null;
    }

    /// <summary>postgreyreport's "subscriber pool": the last two octets both appear in the name.</summary>
    private static bool IsPool(string clientName, string[] octets) =>
        clientName.Contains(octets[2], StringComparison.Ordinal) && clientName.Contains(octets[3], StringComparison.Ordinal);

    /// <summary>
    /// postgrey 1.14's do_sender_substitutions, as postgreyreport has it: the +extension cut, and
    /// every all-digit word of the local part made '#'. (Postgrey 1.37 also undoes BATV prvs=;
    /// postgreyreport does not, so such a sender's key is never found.)
    /// </summary>
    public static string SenderSubstitutions(string address)
    {
        int at = address.IndexOf('@', StringComparison.Ordinal);
        if (at < 0)
        {
            return address;
        }
        string user = address[..at];
        int plus = user.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0)
        {
            user = user[..plus];
        }
        // s/\b\d+\b/#/g: a run of ASCII word characters made only of digits.
        var result = new StringBuilder(user.Length);
        int i = 0;
        while (i < user.Length)
        {
            if (!IsWord(user[i]))
            {
                result.Append(user[i++]);
                continue;
            }
            int start = i;
            bool digits = true;
            for (; i < user.Length && IsWord(user[i]); i++)
            {
                digits &= char.IsAsciiDigit(user[i]);
            }
            result.Append(digits ? "#" : user[start..i]);
        }
        return result.Append(address, at, address.Length - at).ToString();
    }

    private static bool IsWord(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';

    /// <summary>Perl's lc on a byte string: A-Z only.</summary>
    public static string LowerAscii(string text) =>
        string.Create(text.Length, text, static (span, s) =>
        {
            for (int i = 0; i < s.Length; i++)
            {
                span[i] = char.IsAsciiLetterUpper(s[i]) ? (char)(s[i] | 0x20) : s[i];
            }
        });

    /// <summary>pack('C4', the key's first a.b.c.d): each octet as a byte, wrapped as C wraps it.</summary>
    private static uint AddressBytes(string key)
    {
        string[] octets = key[..key.IndexOf('/', StringComparison.Ordinal)].Split('.');
        uint value = 0;
        foreach (string octet in octets)
        {
            value = (value << 8) | (uint.Parse(octet, System.Globalization.CultureInfo.InvariantCulture) & 0xFF);
        }
        return value;
    }
}

/// <summary>
/// The client lists of --skip_clients and --match_clients, read as postgreyreport reads them
/// (postgrey's old whitelist_clients rules): /REGEX/ matched against the client name, a partial
/// dotted address as a regex anchored at the address's start (its dots match any character,
/// as in postgreyreport), anything else a name suffix; case-insensitive.
/// </summary>
internal sealed class ClientPatterns
{
    private static readonly Regex PartialAddress = new(@"^[0-9]{1,3}(?:\.[0-9]{1,3}){0,3}$", RegexOptions.CultureInvariant);
    private static readonly char[] PerlSpaceChars = [' ', '\t', '\n', '\r', '\f', '\v'];
    private static readonly System.Buffers.SearchValues<char> PerlSpace = System.Buffers.SearchValues.Create(PerlSpaceChars);

    private readonly List<Regex> _addresses = [];
    private readonly List<Regex> _names = [];

    /// <summary>Reads <paramref name="files"/>; a line that is none of the forms is warned about
    /// on <paramref name="warnings"/> and skipped, as postgreyreport does.</summary>
    /// <exception cref="FormatException">A /REGEX/ that does not compile, with file and line.</exception>
    public static ClientPatterns Read(IEnumerable<string> files, TextWriter warnings)
    {
        var patterns = new ClientPatterns();
        foreach (string file in files)
        {
            string[] lines = File.ReadAllText(file, Encoding.Latin1).Split('\n');
            for (int n = 0; n < lines.Length; n++)
            {
                string line = lines[n].Trim(PerlSpaceChars);
                if (line.Length == 0 || line[0] == '#')
                {
                    continue;
                }
                try
                {
                    if (line.Length > 2 && line[0] == '/' && line[^1] == '/' && line.AsSpan().IndexOfAny(PerlSpace) < 0)
                    {
                        patterns._names.Add(new Regex(line[1..^1], RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1)));
                    }
                    else if (PartialAddress.IsMatch(line))
                    {
                        patterns._addresses.Add(new Regex("^" + line, RegexOptions.CultureInvariant));
                    }
                    else if (line.AsSpan().IndexOfAny(PerlSpace) < 0)
                    {
                        patterns._names.Add(new Regex(Regex.Escape(line) + "$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant));
                    }
                    else
                    {
                        warnings.WriteLine($"WARNING: {file} line {n + 1}: doesn't look like a hostname");
                    }
                }
                catch (ArgumentException ex)
                {
                    throw new FormatException($"{file} line {n + 1}: bad regular expression {line}: {ex.Message}", ex);
                }
            }
        }
        return patterns;
    }

    public bool Matches(string address, string clientName) =>
        _addresses.Any(r => r.IsMatch(address)) || _names.Any(r => r.IsMatch(clientName));
}
