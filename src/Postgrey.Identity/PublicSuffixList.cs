using System.Globalization;

namespace Postgrey.Identity;

/// <summary>
/// The Public Suffix List (https://publicsuffix.org/list/), both its ICANN and its private
/// sections, as Debian's <c>publicsuffix</c> package ships it; the registrable domain of a
/// name is its public suffix plus one label. Rules in Unicode are kept in their ASCII (punycode)
/// form, which is how Postfix's client_name spells them.
/// </summary>
public sealed class PublicSuffixList
{
    /// <summary>Where Debian's publicsuffix package puts it.</summary>
    public const string DebianPath = "/usr/share/publicsuffix/public_suffix_list.dat";

    private readonly HashSet<string> _rules = new(StringComparer.Ordinal);
    private readonly HashSet<string> _wildcards = new(StringComparer.Ordinal); // "*.ck" kept as "ck"
    private readonly HashSet<string> _exceptions = new(StringComparer.Ordinal); // "!www.ck" kept as "www.ck"

    private PublicSuffixList()
    {
    }

    public int RuleCount => _rules.Count + _wildcards.Count + _exceptions.Count;

    public static PublicSuffixList Load(string path) => Parse(File.ReadLines(path));

    public static PublicSuffixList Parse(IEnumerable<string> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var list = new PublicSuffixList();
        var idn = new IdnMapping();
        foreach (string raw in lines)
        {
            // A rule is the line's first word; comments start with //.
            string line = raw.Trim();
            int space = line.IndexOfAny([' ', '\t']);
            if (space >= 0)
            {
                line = line[..space];
            }
            if (line.Length == 0 || line.StartsWith("//", StringComparison.Ordinal))
            {
                continue;
            }
            bool exception = line.StartsWith('!');
            bool wildcard = line.StartsWith("*.", StringComparison.Ordinal);
            string rule = exception ? line[1..] : wildcard ? line[2..] : line;
            string? ascii = ToAscii(idn, rule);
            if (ascii is null)
            {
                continue;
            }
            (exception ? list._exceptions : wildcard ? list._wildcards : list._rules).Add(ascii);
        }
        return list;
    }

    /// <summary>The registrable domain of <paramref name="host"/> (lower-case ASCII), or null when
    /// the name is itself a public suffix or not a name.</summary>
    public string? RegistrableDomain(string host)
    {
        ArgumentNullException.ThrowIfNull(host);
        string name = host.TrimEnd('.').ToLowerInvariant();
        if (name.Length == 0 || name.StartsWith('.') || name.Contains("..", StringComparison.Ordinal))
        {
            return null;
        }
        string[] labels = name.Split('.');
        int suffixLabels = 1; // the implicit rule "*": an unknown TLD is a suffix of one label
        for (int i = 0; i < labels.Length; i++)
        {
            string candidate = string.Join('.', labels, i, labels.Length - i);
            int count = labels.Length - i;
            if (_exceptions.Contains(candidate))
            {
                // An exception rule wins over everything: its suffix is the rule less its first label.
                suffixLabels = count - 1;
                break;
            }
            if (_rules.Contains(candidate))
            {
                suffixLabels = Math.Max(suffixLabels, count);
            }
            string parent = i + 1 < labels.Length ? string.Join('.', labels, i + 1, labels.Length - i - 1) : "";
            if (parent.Length > 0 && _wildcards.Contains(parent))
            {
                suffixLabels = Math.Max(suffixLabels, count);
            }
        }
        if (labels.Length <= suffixLabels)
        {
            return null;
        }
        return string.Join('.', labels, labels.Length - suffixLabels - 1, suffixLabels + 1);
    }

    private static string? ToAscii(IdnMapping idn, string rule)
    {
        bool ascii = true;
        foreach (char c in rule)
        {
            if (c > 0x7f)
            {
                ascii = false;
                break;
            }
        }
        if (ascii)
        {
            return rule.ToLowerInvariant();
        }
        try
        {
            return idn.GetAscii(rule).ToLowerInvariant();
        }
        catch (ArgumentException)
        {
            return null;
        }
    }
}
