using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Postgrey.Server;

/// <summary>
/// Parses postgrey's <c>--inet=[HOST:]PORT</c>: a bare port binds localhost (127.0.0.1 and ::1),
/// <c>HOST:PORT</c> an address or a name, <c>[v6]:PORT</c> an IPv6 address, <c>*:PORT</c> every address.
/// </summary>
public static class InetSpec
{
    public static bool TryParse(string spec, out IReadOnlyList<InetEndpoint> endpoints, out string error)
    {
        ArgumentNullException.ThrowIfNull(spec);
        endpoints = [];
        error = "";
        string host;
        string portText;
        int colon = spec.LastIndexOf(':');
        if (colon < 0)
        {
            host = "localhost";
            portText = spec;
        }
        else
        {
            host = spec[..colon];
            portText = spec[(colon + 1)..];
            if (host.StartsWith('[') && host.EndsWith(']'))
            {
                host = host[1..^1];
            }
            else if (host.Contains(':', StringComparison.Ordinal))
            {
                error = $"--inet={spec}: write an IPv6 address in brackets, e.g. [::1]:10023";
                return false;
            }
        }
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
        {
            error = $"--inet={spec}: invalid port '{portText}'";
            return false;
        }

        if (host.Length == 0 || host == "*")
        {
            endpoints = [new InetEndpoint(new IPEndPoint(IPAddress.IPv6Any, port))];
            return true;
        }
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            endpoints = [new InetEndpoint(new IPEndPoint(IPAddress.Loopback, port)), new InetEndpoint(new IPEndPoint(IPAddress.IPv6Loopback, port), Optional: true)];
            return true;
        }
        if (IPAddress.TryParse(host, out IPAddress? address))
        {
            endpoints = [new InetEndpoint(new IPEndPoint(address, port))];
            return true;
        }
        try
        {
            IPAddress[] addresses = Dns.GetHostAddresses(host);
            if (addresses.Length == 0)
            {
                error = $"--inet={spec}: host name '{host}' has no address";
                return false;
            }
            endpoints = addresses
                .Where(a => a.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
                .Distinct()
                .Select(a => new InetEndpoint(new IPEndPoint(a, port)))
                .ToList();
            return true;
        }
        catch (SocketException ex)
        {
            error = $"--inet={spec}: can't resolve '{host}': {ex.Message}";
            return false;
        }
    }
}
