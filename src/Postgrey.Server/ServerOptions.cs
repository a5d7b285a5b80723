using System.Net;
using Postgrey.Core.Protocol;

namespace Postgrey.Server;

/// <summary>Listeners and per-connection behaviour.</summary>
public sealed record ServerOptions
{
    /// <summary>TCP endpoints (from --inet), already resolved.</summary>
    public IReadOnlyList<InetEndpoint> Inet { get; init; } = [];

    /// <summary>Unix socket paths (from --unix).</summary>
    public IReadOnlyList<string> Unix { get; init; } = [];

    /// <summary>--socketmode, applied to each Unix socket file.</summary>
    public UnixFileMode SocketMode { get; init; } = (UnixFileMode)Convert.ToInt32("666", 8);

    /// <summary>--listen-queue-size; null: the system's maximum (SOMAXCONN).</summary>
    public int? ListenQueueSize { get; init; }

    /// <summary>--exim: one request per connection.</summary>
    public bool Exim { get; init; }

    /// <summary>--max-connections: more are accepted and closed at once.</summary>
    public int MaxConnections { get; init; } = 1000;

    public PolicyLimits Limits { get; init; } = new();

    /// <summary>--transport: how connections are served; epoll on Linux, sockets elsewhere.</summary>
    public PolicyTransport Transport { get; init; } = OperatingSystem.IsLinux() ? PolicyTransport.Epoll : PolicyTransport.Sockets;
}

/// <summary>The two ways of serving connections. Both behave the same to clients.</summary>
public enum PolicyTransport
{
    /// <summary>One epoll loop thread for every socket (Linux only): the fastest.</summary>
    Epoll,

    /// <summary>.NET's sockets, a task per connection: every platform.</summary>
    Sockets,
}

/// <summary>One TCP listen address. <see cref="Optional"/> addresses (the ::1 half of a bare
/// port) are skipped with a warning when the system cannot bind them.</summary>
public sealed record InetEndpoint(IPEndPoint EndPoint, bool Optional = false)
{
    public override string ToString() => EndPoint.ToString();
}
