using System.Net;
using System.Net.Sockets;

namespace Postgrey.Core.Whitelists;

/// <summary>A set of IP networks, grouped by prefix length: a lookup costs one hash probe per
/// distinct prefix length, whatever the number of networks.</summary>
internal sealed class NetworkSet
{
    private readonly List<(int Prefix, HashSet<UInt128> Networks)> _v4 = [];
    private readonly List<(int Prefix, HashSet<UInt128> Networks)> _v6 = [];

    public int Count { get; private set; }

    public void Add(IPAddress network, int prefix)
    {
        var groups = network.AddressFamily == AddressFamily.InterNetwork ? _v4 : _v6;
        UInt128 masked = Mask(ToNumber(network), prefix, Width(network));
        foreach (var group in groups)
        {
            if (group.Prefix == prefix)
            {
                if (group.Networks.Add(masked))
                {
                    Count++;
                }
                return;
            }
        }
        groups.Add((prefix, [masked]));
        Count++;
    }

    public bool Contains(IPAddress address)
    {
        var groups = address.AddressFamily == AddressFamily.InterNetwork ? _v4 : _v6;
        if (groups.Count == 0)
        {
            return false;
        }
        UInt128 number = ToNumber(address);
        int width = Width(address);
        foreach (var group in groups)
        {
            if (group.Networks.Contains(Mask(number, group.Prefix, width)))
            {
                return true;
            }
        }
        return false;
    }

    private static int Width(IPAddress address) => address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;

    private static UInt128 ToNumber(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out int written);
        UInt128 n = 0;
        for (int i = 0; i < written; i++)
        {
            n = (n << 8) | bytes[i];
        }
        return n;
    }

    private static UInt128 Mask(UInt128 number, int prefix, int width)
    {
        if (prefix <= 0)
        {
            return 0;
        }
        if (prefix >= width)
        {
            return number;
        }
        return number & ~((UInt128.One << (width - prefix)) - 1);
    }
}
