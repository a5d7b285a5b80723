using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Postgrey.Core.Greylisting;

/// <summary>
/// postgrey's database keys, byte for byte, so that an imported postgrey database keeps working
/// and a side-by-side run stores the same triplets.
/// </summary>
public static class TripletKey
{
    /// <summary><c>lc(CLIENT_NET/SENDER'/recipient)</c>, or its SHA-1 hex with --privacy.</summary>
    public static string Build(IPAddress client, string sender, string recipient, GreylistOptions options)
    {
        ArgumentNullException.ThrowIfNull(client);
        return Build(ClientPart(client, options), sender, recipient, options);
    }

    /// <summary>The same key with another network part: with --lookup-by-identity, a domain
    /// that stands for the sender's fleet instead of the client's subnet.</summary>
    public static string Build(string networkPart, string sender, string recipient, GreylistOptions options)
    {
        ArgumentNullException.ThrowIfNull(networkPart);
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentNullException.ThrowIfNull(recipient);
        ArgumentNullException.ThrowIfNull(options);
        string key = AsciiLower(string.Concat(networkPart, "/", NormalizeSender(sender), "/", recipient));
        return options.Privacy ? Sha1Hex(key) : key;
    }

    /// <summary>The auto-whitelist key: the full address as NetAddr::IP spells it (not lower-cased,
    /// as in postgrey), or its SHA-1 hex with --privacy.</summary>
    public static string ClientKey(IPAddress client, GreylistOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        string key = ClientAddress.Format(client);
        return options.Privacy ? Sha1Hex(key) : key;
    }

    /// <summary>The network part: masked to --ipv4cidr/--ipv6cidr, or with --lookup-by-host the whole
    /// address followed by its prefix length, as NetAddr::IP stringifies itself.</summary>
    public static string ClientPart(IPAddress client, GreylistOptions options)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        if (options.LookupByHost)
        {
            return ClientAddress.Format(client) + "/" + ClientAddress.Bits(client).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        int prefix = client.AddressFamily == AddressFamily.InterNetwork ? options.IPv4Cidr : options.IPv6Cidr;
        return ClientAddress.Format(ClientAddress.Network(client, prefix));
    }

    /// <summary>
    /// postgrey's <c>do_sender_substitutions</c>: with no '@' the sender is kept as is; otherwise the
    /// BATV wrapper is removed from the local part, then a '+extension', then every run of digits that
    /// stands as a word of its own becomes '#' (VERP).
    /// </summary>
    public static string NormalizeSender(string sender)
    {
        ArgumentNullException.ThrowIfNull(sender);
        int at = sender.IndexOf('@', StringComparison.Ordinal);
        if (at < 0)
        {
            return sender;
        }
        string user = sender[..at];
        string domain = sender[(at + 1)..];

        // BATV is prvs=tag-val=loc-core@, but also shows up as prvs=loc-core=tag-val@.
        if (user.StartsWith("prvs=", StringComparison.Ordinal))
        {
            string[] parts = PerlSplit(user, '=');
            if (parts.Length == 3)
            {
                bool firstIsTag = StartsWithTag(parts[1]);
                bool secondIsTag = StartsWithTag(parts[2]);
                user = firstIsTag && !secondIsTag ? parts[2]
                    : secondIsTag && !firstIsTag ? parts[1]
                    : parts[2];
            }
        }

        int plus = user.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0)
        {
            user = user[..plus];
        }
        return ReplaceDigitWords(user) + "@" + domain;
    }

    /// <summary>Lower-cases A-Z only, as Perl's <c>lc</c> on bytes; every other character stays.</summary>
    public static string AsciiLower(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int i = 0;
        while (i < text.Length && text[i] is not (>= 'A' and <= 'Z'))
        {
            i++;
        }
        if (i == text.Length)
        {
            return text;
        }
        return string.Create(text.Length, (text, i), static (span, state) =>
        {
            state.text.AsSpan().CopyTo(span);
            for (int j = state.i; j < span.Length; j++)
            {
                if (span[j] is >= 'A' and <= 'Z')
                {
                    span[j] = (char)(span[j] + 32);
                }
            }
        });
    }

    public static string Sha1Hex(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        // SHA-1 is what postgrey's --privacy stores; keys must stay compatible. Not a security boundary.
#pragma warning disable CA5350
        return Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(text)));
#pragma warning restore CA5350
    }

    // /^[0-9a-z]{10}/
    private static bool StartsWithTag(string s)
    {
        if (s.Length < 10)
        {
            return false;
        }
        for (int i = 0; i < 10; i++)
        {
            if (s[i] is not ((>= '0' and <= '9') or (>= 'a' and <= 'z')))
            {
                return false;
            }
        }
        return true;
    }

    // Perl's split without a limit drops trailing empty fields.
    private static string[] PerlSplit(string s, char separator)
    {
        string[] parts = s.Split(separator);
        int n = parts.Length;
        while (n > 0 && parts[n - 1].Length == 0)
        {
            n--;
        }
        return n == parts.Length ? parts : parts[..n];
    }

    private static bool IsWordChar(char c) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_';

    // s/\b\d+\b/#/g: a maximal run of ASCII digits with no word character on either side.
    private static string ReplaceDigitWords(string user)
    {
        StringBuilder? sb = null;
        int copied = 0;
        int i = 0;
        while (i < user.Length)
        {
            if (user[i] is >= '0' and <= '9')
            {
                int j = i;
                while (j < user.Length && user[j] is >= '0' and <= '9')
                {
                    j++;
                }
                bool boundedLeft = i == 0 || !IsWordChar(user[i - 1]);
                bool boundedRight = j == user.Length || !IsWordChar(user[j]);
                if (boundedLeft && boundedRight)
                {
                    sb ??= new StringBuilder(user.Length);
                    sb.Append(user, copied, i - copied).Append('#');
                    copied = j;
                }
                i = j;
            }
            else
            {
                i++;
            }
        }
        if (sb is null)
        {
            return user;
        }
        return sb.Append(user, copied, user.Length - copied).ToString();
    }
}
