using System.Net;
using System.Net.Sockets;

namespace Postgrey.Identity;

/// <summary>
/// Whether a verified host name looks like one of many generic names an ISP gives its
/// customers' lines rather than a mail server's own. Only the labels left of the registrable
/// domain (the host part) are looked at; the name is dynamic-looking when they
/// <list type="bullet">
/// <item>hold a copy of the client address: for IPv4 a.b.c.d all of b, c and d as numbers of
/// their own (1-2-3-4, 4.3.2.1, c-203-0-113-7, 2-3-4.isp.example, ...), or the address as 8 hex digits (p5B0C1234) or
/// 12 decimal digits (203000113007); for IPv6 the last 32 bits as hex digits;</item>
/// <item>or hold one of the pool words in <see cref="PoolWords"/> as a word of its own, words
/// being split at dots, dashes, underscores and changes between letters and digits
/// (dsl123 is "dsl" "123"; "mail-db5eur03" is "mail" "db" "5" "eur" "03").</item>
/// </list>
/// Real mail servers' names (mail-yw1-f170.google.com, a4-11.smtp-out.amazonses.com,
/// mail-db5eur03on2061.outbound.protection.outlook.com) pass; two octets are not enough, as
/// Amazon SES's a4-11.smtp-out.amazonses.com shows.
/// </summary>
public static class DynamicNames
{
    /// <summary>Words ISPs use for customer lines and address pools. "static" is among them: a
    /// static line is still a customer's line, not a provider's mail server.</summary>
    public static readonly IReadOnlySet<string> PoolWords = new HashSet<string>(StringComparer.Ordinal)
    {
        "dynamic", "dyn", "dynip", "dhcp", "pool", "ppp", "pppoe", "dsl", "adsl", "vdsl", "xdsl", "sdsl",
        "cable", "cpe", "dial", "dialup", "dialin", "client", "clients", "customer", "cust", "broadband",
        "home", "host", "static", "nat", "mobile", "wireless", "ftth", "fttx", "fiber", "fibre",
        "residential", "resident", "rev", "reverse", "unassigned", "generic", "ip", "user", "users", "dip",
        "addr", "lease", "leased", "modem", "catv",
    };

    /// <summary>True when <paramref name="hostPart"/> (the labels left of the registrable domain)
    /// looks like a generic name of a customer line of <paramref name="address"/>.</summary>
    public static bool LooksDynamic(string hostPart, IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(hostPart);
        ArgumentNullException.ThrowIfNull(address);
        string host = hostPart.ToLowerInvariant();
        List<string> words = Words(host);
        foreach (string word in words)
        {
            if (PoolWords.Contains(word))
            {
                return true;
            }
        }
        return EmbedsAddress(host, words, address);
    }

    private static bool EmbedsAddress(string host, List<string> words, IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }
        byte[] bytes = address.GetAddressBytes();
        string compact = new([.. host.Where(char.IsAsciiLetterOrDigit)]);
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var numbers = new HashSet<int>();
            foreach (string word in words)
            {
                if (word.Length <= 3 && word.All(char.IsAsciiDigit))
                {
                    numbers.Add(int.Parse(word, System.Globalization.CultureInfo.InvariantCulture));
                }
            }
            // Three octets, not two: Amazon SES names its servers a4-11.smtp-out.amazonses.com
            // after the last two.
            if (numbers.Contains(bytes[1]) && numbers.Contains(bytes[2]) && numbers.Contains(bytes[3]) && CountNumbers(words) >= 3)
            {
                return true;
            }
            string hex = Convert.ToHexStringLower(bytes);
            string padded = string.Concat(bytes.Select(b => b.ToString("D3", System.Globalization.CultureInfo.InvariantCulture)));
            return compact.Contains(hex, StringComparison.Ordinal) || compact.Contains(padded, StringComparison.Ordinal);
        }
        string low32 = Convert.ToHexStringLower(bytes, 12, 4);
        return low32 != "00000000" && compact.Contains(low32, StringComparison.Ordinal);
    }

    private static int CountNumbers(List<string> words) => words.Count(w => w.All(char.IsAsciiDigit));

    /// <summary>Split at anything but letters and digits, and between letters and digits.</summary>
    private static List<string> Words(string host)
    {
        var words = new List<string>();
        int start = -1;
        for (int i = 0; i <= host.Length; i++)
        {
            char c = i < host.Length ? host[i] : '.';
            bool boundary = !char.IsAsciiLetterOrDigit(c)
                || (start >= 0 && char.IsAsciiDigit(c) != char.IsAsciiDigit(host[start]));
            if (boundary && start >= 0)
            {
                words.Add(host[start..i]);
                start = -1;
            }
            if (char.IsAsciiLetterOrDigit(c) && start < 0)
            {
                start = i;
            }
        }
        return words;
    }
}
