using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Postgrey.Configuration;

/// <summary>--dns-server: an address, with a port after a colon (IPv6 in brackets when a port
/// follows: [::1]:5353). An address rather than a name: the resolver is what resolves names.</summary>
internal readonly record struct DnsServerEndpoint(IPAddress Address, int Port)
{
    public static bool TryParse(string text, out DnsServerEndpoint endpoint, out string error)
    {
        endpoint = default;
        error = "an IP address is expected, with :PORT if not 53 ([IPv6]:PORT)";
        string host = text;
        int port = 53;
        int colon = text.LastIndexOf(':');
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                return false;
            }
            host = text[1..close];
            string rest = text[(close + 1)..];
            if (rest.Length > 0 && (!rest.StartsWith(':') || !TryPort(rest[1..], out port)))
            {
                return false;
            }
        }
        else if (colon >= 0 && text.IndexOf(':', StringComparison.Ordinal) == colon)
        {
            // One colon: IPv4 (or a name) with a port. More: a bare IPv6 address.
            host = text[..colon];
            if (!TryPort(text[(colon + 1)..], out port))
            {
                return false;
            }
        }
        if (!IPAddress.TryParse(host, out IPAddress? address)
            || address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
        {
            return false;
        }
        endpoint = new DnsServerEndpoint(address, port);
        return true;
    }

    private static bool TryPort(string text, out int port) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is > 0 and <= 65535;

    public override string ToString() =>
        (Address.AddressFamily == AddressFamily.InterNetworkV6 ? "[" + Address + "]" : Address.ToString()) + ":" + Port.ToString(CultureInfo.InvariantCulture);
}
