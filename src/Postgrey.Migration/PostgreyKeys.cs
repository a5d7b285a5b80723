using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Postgrey.Core.Greylisting;

namespace Postgrey.Migration;

/// <summary>
/// The key and value forms postgrey versions wrote, and how each is brought to the form postgrey
/// 1.37 (and this service) builds, so that an imported triplet is found again by the next retry.
/// </summary>
/// <remarks>
/// Triplet keys are <c>CLIENT/SENDER/RECIPIENT</c>, lower-cased, where CLIENT is:
/// <list type="bullet">
/// <item><c>192.0.2.0</c>, <c>2001:db8:0:0:0:0:0:0</c>: 1.37's subnet; kept.</item>
/// <item><c>192.0.2.10/32</c>, <c>2001:db8:0:0:0:0:0:1/128</c>: --lookup-by-host; kept.</item>
/// <item><c>192.0.2.0/24</c>: the subnet as 1.36 wrote it, with its prefix; the prefix is dropped, as 1.37 writes it.</item>
/// <item><c>192.0.2</c>: the /24 as postgrey before NetAddr::IP (1.2x) wrote it; becomes <c>192.0.2.0</c>.</item>
/// <item>IPv6 spelled another way (<c>2001:db8::1</c>, as written before NetAddr::IP): respelled as NetAddr::IP does.</item>
/// </list>
/// With --privacy every key is the SHA-1 hex of the key; it is kept as it is (it cannot be
/// respelled). Client (auto-whitelist) keys are the full address, or its SHA-1 hex.
/// Values are <c>first,last</c> (older versions appended <c>,host</c>, ignored) and <c>count,last</c>.
/// </remarks>
public static class PostgreyKeys
{
    /// <summary>Brings a triplet key to 1.37's form; false with the reason when it is not one.</summary>
    public static bool TryNormalizeTriplet(string key, out string normalized, out string reason)
    {
        ArgumentNullException.ThrowIfNull(key);
        normalized = key;
        reason = "";
        if (IsSha1Hex(key))
        {
            return true;
        }
        int slash = key.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 || key.IndexOf('/', slash + 1) < 0)
        {
            reason = "not CLIENT/SENDER/RECIPIENT nor a --privacy SHA-1";
            return false;
        }
        string client = key[..slash];
        string rest = key[(slash + 1)..];
        if (!TryParseClient(client, out IPAddress address, out bool threeOctets))
        {
            reason = $"client part \"{client}\" is not an IP address";
            return false;
        }

        // ADDR/N/SENDER/RECIPIENT: a prefix length follows when the next part is digits and two
        // more slashes remain (a 1.37 key with a sender such as "24" has only one more).
        string suffix = "";
        int next = rest.IndexOf('/', StringComparison.Ordinal);
        if (!threeOctets && next > 0 && rest.IndexOf('/', next + 1) >= 0 && IsDigits(rest.AsSpan(0, next)))
        {
            int bits = ClientAddress.Bits(address);
            if (!int.TryParse(rest.AsSpan(0, next), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) || prefix > bits)
            {
                reason = $"prefix /{rest[..next]} is longer than the address";
                return false;
            }
            if (prefix == bits)
            {
                suffix = "/" + rest[..next]; // --lookup-by-host
            }
            rest = rest[(next + 1)..];
        }
        normalized = string.Concat(LowerAscii(ClientAddress.Format(address)), suffix, "/", rest);
        return true;
    }

    /// <summary>Brings an auto-whitelist key to 1.37's form: the address as NetAddr::IP spells it
    /// (IPv6 upper-case, as postgrey stores it), or a SHA-1 hex.</summary>
    public static bool TryNormalizeClient(string key, out string normalized, out string reason)
    {
        ArgumentNullException.ThrowIfNull(key);
        normalized = key;
        reason = "";
        if (IsSha1Hex(key))
        {
            return true;
        }
        if (!TryParseClient(key, out IPAddress address, out bool threeOctets) || threeOctets)
        {
            reason = "not an IP address nor a --privacy SHA-1";
            return false;
        }
        normalized = ClientAddress.Format(address);
        return true;
    }

    /// <summary>Parses <c>A,B</c> (with up to <paramref name="extraFields"/> more fields, ignored)
    /// into two non-negative integers.</summary>
    public static bool TryParseValue(string value, int extraFields, out long first, out long second, out string reason)
    {
        ArgumentNullException.ThrowIfNull(value);
        first = second = 0;
        string[] fields = value.Split(',');
        if (fields.Length < 2 || fields.Length > 2 + extraFields)
        {
            reason = extraFields > 0 ? "value is not FIRST,LAST" : "value is not COUNT,LAST";
            return false;
        }
        if (!long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out first)
            || !long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out second))
        {
            reason = "value holds something other than whole numbers";
            return false;
        }
        reason = "";
        return true;
    }

    private static bool TryParseClient(string text, out IPAddress address, out bool threeOctets)
    {
        threeOctets = false;
        address = IPAddress.None;
        if (text.Contains(':', StringComparison.Ordinal))
        {
            // Not ClientAddress.TryParse: that folds ::ffff:a.b.c.d to IPv4, which a stored key is not.
            if (text.Contains('%', StringComparison.Ordinal) || !IPAddress.TryParse(text, out IPAddress? v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }
            address = v6;
            return true;
        }
        if (ClientAddress.TryParse(text, out address))
        {
            return true;
        }
        if (text.Count(c => c == '.') == 2 && ClientAddress.TryParse(text + ".0", out address))
        {
            threeOctets = true;
            return true;
        }
        return false;
    }

    private static bool IsSha1Hex(string key) => key.Length == 40 && key.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'));

    private static bool IsDigits(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty || text.Length > 3)
        {
            return false;
        }
        foreach (char c in text)
        {
            if (c is < '0' or > '9')
            {
                return false;
            }
        }
        return true;
    }

    // postgrey lower-cases the whole key with Perl's lc: A-Z only.
    private static string LowerAscii(string text) => string.Create(text.Length, text, static (span, s) =>
    {
        for (int i = 0; i < s.Length; i++)
        {
            span[i] = s[i] is >= 'A' and <= 'Z' ? (char)(s[i] + 32) : s[i];
        }
    });
}
