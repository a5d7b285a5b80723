using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Postgrey.Server;

/// <summary>
/// The one accept gate of both transports: what an accepted connection goes through before it
/// is served (the --max-connections cap and its warning, its number and peer name, whether it
/// wants TCP_NODELAY), what its end gives back, and the back-off after a failed accept(2).
/// Thread-safe: the socket transport accepts on several pool threads.
/// </summary>
internal sealed class ConnectionGate(int maxConnections, ILogger logger)
{
    private const long RefusalWarningEveryMs = 10_000;
    private const int MaxBackoffMs = 1000;

    private long _lastId;
    private int _open;
    private long _lastRefusalWarning = long.MinValue / 2;

    /// <summary>Connections admitted and not yet released.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>Admits a connection accepted on a socket of <paramref name="family"/>, or
    /// refuses it (the caller closes it at once) when --max-connections are open, with a
    /// warning at most every 10 s.</summary>
    public bool TryAdmit(AddressFamily family, out Admission admission)
    {
        if (Interlocked.Increment(ref _open) > maxConnections)
        {
            Interlocked.Decrement(ref _open);
            ServerMetrics.Refused();
            WarnRefused();
            admission = default;
            return false;
        }
        // Policy answers are small and awaited one by one: Nagle's algorithm would hold them
        // back behind the delayed ACK of the previous one.
        ServerMetrics.Opened();
        admission = new Admission(Interlocked.Increment(ref _lastId), family is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6);
        return true;
    }

    /// <summary>A connection admitted by <see cref="TryAdmit"/> has ended.</summary>
    public void Release()
    {
        Interlocked.Decrement(ref _open);
        ServerMetrics.Closed();
    }

    /// <summary>accept(2) failed for want of descriptors or buffers: the delay before the
    /// listener is tried again, doubled at each failure in a row (10 ms to 1 s), so that the
    /// loop backs off instead of spinning. <paramref name="backoffMs"/> is the listener's own,
    /// set to 0 by its next successful accept.</summary>
    public int AcceptFailed(ref int backoffMs, string error)
    {
        backoffMs = Math.Min(Math.Max(backoffMs * 2, 10), MaxBackoffMs);
        ServerLog.AcceptFailed(logger, error, backoffMs);
        return backoffMs;
    }

    private void WarnRefused()
    {
        long now = Environment.TickCount64;
        long last = Interlocked.Read(ref _lastRefusalWarning);
        if (now - last > RefusalWarningEveryMs && Interlocked.CompareExchange(ref _lastRefusalWarning, now, last) == last)
        {
            ServerLog.TooManyConnections(logger, maxConnections);
        }
    }
}

/// <summary>A connection let in by the <see cref="ConnectionGate"/>.</summary>
internal readonly record struct Admission(long Id, bool NoDelay)
{
    /// <summary>How the log names the connection: its number and the client's address.</summary>
    public string Peer(EndPoint? remote) => remote is IPEndPoint ip ? $"#{Id} {ip}" : $"#{Id} unix";
}
