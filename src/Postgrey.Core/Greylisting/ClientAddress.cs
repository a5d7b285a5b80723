using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Postgrey.Core.Greylisting;

/// <summary>Parsing and postgrey's (NetAddr::IP's) spelling of client addresses.</summary>
public static class ClientAddress
{
    /// <summary>
    /// Parses <c>client_address</c> strictly: a dotted quad or an IPv6 literal. Forms that
    /// <see cref="IPAddress.TryParse(string, out IPAddress)"/> also takes ("1.2", "0x7f.1") are refused.
    /// An IPv4-mapped IPv6 address is returned as the IPv4 address (postgrey folds them all into
    /// one /64; a deliberate difference).
    /// </summary>
    public static bool TryParse(string? text, out IPAddress address)
    {
        address = IPAddress.None;
        if (string.IsNullOrEmpty(text) || text.Length > 64)
        {
            return false;
        }
        if (text.Contains(':', StringComparison.Ordinal))
        {
            if (!IPAddress.TryParse(text, out IPAddress? v6) || v6.AddressFamily != AddressFamily.InterNetworkV6)
            {
                return false;
            }
            address = v6.IsIPv4MappedToIPv6 ? v6.MapToIPv4() : new IPAddress(v6.GetAddressBytes()); // drop any %scope
            return true;
        }
        if (!IsDottedQuad(text) || !IPAddress.TryParse(text, out IPAddress? v4))
        {
            return false;
        }
        address = v4;
        return true;
    }

    private static bool IsDottedQuad(string text)
    {
        int parts = 0;
        int digits = 0;
        int value = 0;
        foreach (char c in text)
        {
            if (c == '.')
            {
                if (digits == 0)
                {
                    return false;
                }
                parts++;
                digits = 0;
                value = 0;
            }
            else if (c is >= '0' and <= '9')
            {
                value = (value * 10) + (c - '0');
                if (++digits > 3 || value > 255)
                {
                    return false;
                }
            }
            else
            {
                return false;
            }
        }
        return parts == 3 && digits > 0;
    }

    /// <summary>Prefix length of the whole address: 32 or 128.</summary>
    public static int Bits(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        return address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
    }

    /// <summary>The network address of <paramref name="address"/> under a prefix of <paramref name="prefixLength"/> bits.</summary>
    public static IPAddress Network(IPAddress address, int prefixLength)
    {
        ArgumentNullException.ThrowIfNull(address);
        byte[] bytes = address.GetAddressBytes();
        ApplyMask(bytes, prefixLength);
        return new IPAddress(bytes);
    }

    /// <summary>Clears every bit after the first <paramref name="prefixLength"/> bits.</summary>
    public static void ApplyMask(Span<byte> bytes, int prefixLength)
    {
        for (int i = 0; i < bytes.Length; i++)
        {
            int keep = Math.Clamp(prefixLength - (i * 8), 0, 8);
            bytes[i] &= (byte)(0xFF00 >> keep);
        }
    }

    /// <summary>
    /// NetAddr::IP's <c>addr()</c>: IPv4 dotted; IPv6 as eight groups, leading zeros dropped,
    /// upper-case, never compressed (<c>2A01:222:F400:FE44:0:0:0:0</c>).
    /// </summary>
    public static string Format(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            return address.ToString();
        }
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        var sb = new StringBuilder(39);
        for (int i = 0; i < 16; i += 2)
        {
            if (i > 0)
            {
                sb.Append(':');
            }
            sb.Append(((bytes[i] << 8) | bytes[i + 1]).ToString("X", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
