using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Postgrey.Server;

/// <summary>
/// The listening sockets: bound from --inet/--unix, or handed over already listening by the
/// service manager (systemd socket activation). Binding is separate from serving so that the
/// service can bind as root, then drop privileges, then serve. Dispose closes them and removes
/// the socket files this process created (never one systemd owns).
/// </summary>
public sealed partial class PolicyListeners : IDisposable
{
    private readonly List<Socket> _sockets = [];
    private readonly List<string> _socketFiles = [];
    private readonly ILogger _logger;

    private PolicyListeners(ILogger logger) => _logger = logger;

    public IReadOnlyList<Socket> Sockets => _sockets;

    /// <summary>True when the sockets came from the service manager.</summary>
    public bool Inherited { get; private set; }

    /// <summary>Binds every --inet and --unix address; all or none (a failure closes the rest).</summary>
    public static PolicyListeners Bind(ServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var listeners = new PolicyListeners(logger);
        try
        {
            foreach (InetEndpoint endpoint in options.Inet)
            {
                listeners.BindInet(endpoint, options.ListenQueueSize);
            }
            foreach (string path in options.Unix)
            {
                listeners.BindUnix(path, options);
            }
            if (listeners._sockets.Count == 0)
            {
                throw new IOException("no socket could be bound");
            }
        }
        catch
        {
            listeners.Dispose();
            throw;
        }
        return listeners;
    }

    /// <summary>Takes sockets that already listen (from systemd); they are served as they are.</summary>
    public static PolicyListeners Adopt(IEnumerable<Socket> sockets, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(sockets);
        ArgumentNullException.ThrowIfNull(logger);
        var listeners = new PolicyListeners(logger) { Inherited = true };
        foreach (Socket socket in sockets)
        {
            listeners._sockets.Add(socket);
            Log.ListeningInherited(logger, Describe(socket.LocalEndPoint));
        }
        return listeners;
    }

    private void BindInet(InetEndpoint endpoint, int? backlog)
    {
        var socket = new Socket(endpoint.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.EndPoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }
            // Restarting right after a stop must not fail on connections still in TIME_WAIT.
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endpoint.EndPoint);
            Listen(socket, backlog);
        }
        catch (SocketException ex) when (endpoint.Optional && ex.SocketErrorCode is SocketError.AddressNotAvailable or SocketError.AddressFamilyNotSupported)
        {
            socket.Dispose();
            Log.OptionalBindSkipped(_logger, endpoint.ToString(), ex.Message);
            return;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new IOException($"can't bind to {endpoint}: {ex.Message}", ex);
        }
        _sockets.Add(socket);
        Log.Listening(_logger, socket.LocalEndPoint!.ToString()!);
    }

    private void BindUnix(string path, ServerOptions options)
    {
        RemoveStaleSocket(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            _socketFiles.Add(path);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(path, options.SocketMode);
            }
            Listen(socket, options.ListenQueueSize);
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new IOException($"can't bind to unix socket {path}: {ex.Message}", ex);
        }
        _sockets.Add(socket);
        Log.Listening(_logger, "unix:" + path);
    }

    /// <summary>A socket file left by a dead process is removed; one that still answers belongs to a
    /// running server and is an error, not something to steal.</summary>
    private static void RemoveStaleSocket(string path)
    {
        if (!File.Exists(path))
        {
            return;
        }
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new IOException($"unix socket {path} is in use by another process");
            }
            catch (SocketException)
            {
                // nobody listens: stale
            }
        }
        File.Delete(path);
    }

    private static void Listen(Socket socket, int? backlog)
    {
        if (backlog is int size)
        {
            socket.Listen(size);
        }
        else
        {
            socket.Listen();
        }
    }

    private static string Describe(EndPoint? endPoint) => endPoint switch
    {
        UnixDomainSocketEndPoint unix => "unix:" + unix,
        null => "?",
        _ => endPoint.ToString() ?? "?",
    };

    /// <summary>Closes every socket (new connections are refused from here on, or queued by
    /// systemd for the next start when inherited) and removes our socket files.</summary>
    public void Dispose()
    {
        foreach (Socket socket in _sockets)
        {
            socket.Dispose();
        }
        foreach (string path in _socketFiles)
        {
            try
            {
                File.Delete(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // gone already, or not ours to delete any more after dropping privileges
                Log.SocketFileNotRemoved(_logger, path, ex.Message);
            }
        }
        _socketFiles.Clear();
    }

    private static partial class Log
    {
        [LoggerMessage(1001, LogLevel.Information, "listening on {EndPoint}", EventName = "Listening")]
        public static partial void Listening(ILogger logger, string endPoint);

        [LoggerMessage(1002, LogLevel.Warning, "not listening on {EndPoint}: {Reason}", EventName = "OptionalBindSkipped")]
        public static partial void OptionalBindSkipped(ILogger logger, string endPoint, string reason);

        [LoggerMessage(1006, LogLevel.Information, "listening on {EndPoint} (socket passed by systemd)", EventName = "ListeningInherited")]
        public static partial void ListeningInherited(ILogger logger, string endPoint);

        [LoggerMessage(1007, LogLevel.Debug, "socket file {Path} not removed: {Reason}", EventName = "SocketFileNotRemoved")]
        public static partial void SocketFileNotRemoved(ILogger logger, string path, string reason);
    }
}
