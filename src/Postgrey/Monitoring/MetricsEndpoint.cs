using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Postgrey.Server;

namespace Postgrey.Monitoring;

/// <summary>
/// --metrics: GET /metrics (Prometheus text format) and GET /health on a plain HTTP/1.1 socket
/// of its own, served by one thread of its own, one connection at a time, each with a short
/// time-out: scrapers, however slow or many, queue here (in a small backlog, the rest refused)
/// and never take a thread, a descriptor budget or a lock from the policy answers. Bound before
/// the service starts, so a port in use stops the start.
/// </summary>
internal sealed partial class MetricsEndpoint : IDisposable
{
    private const int Backlog = 16;
    private const int MaxRequestBytes = 8192;
    private static readonly TimeSpan ClientTimeout = TimeSpan.FromSeconds(5);

    private readonly List<Socket> _sockets = [];
    private readonly MetricsCollector _collector;
    private readonly ILogger _logger;
    private readonly StringBuilder _text = new(16 * 1024);
    private Func<string?> _health = static () => "starting";
    private Thread? _thread;
    private volatile bool _stopped;

    private MetricsEndpoint(MetricsCollector collector, ILogger logger)
    {
        _collector = collector;
        _logger = logger;
    }

    /// <summary>Binds every address of <paramref name="endpoints"/> (an optional one that
    /// cannot be bound is skipped); throws <see cref="IOException"/> for any other.</summary>
    public static MetricsEndpoint Bind(IReadOnlyList<InetEndpoint> endpoints, MetricsCollector collector, ILogger logger)
    {
        var endpoint = new MetricsEndpoint(collector, logger);
        try
        {
            foreach (InetEndpoint inet in endpoints)
            {
                var socket = new Socket(inet.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    if (inet.EndPoint.AddressFamily == AddressFamily.InterNetworkV6)
                    {
                        socket.DualMode = inet.EndPoint.Address.Equals(IPAddress.IPv6Any); // "*:PORT": both families
                    }
                    socket.Bind(inet.EndPoint);
                    socket.Listen(Backlog);
                }
                catch (SocketException) when (inet.Optional)
                {
                    socket.Dispose();
                    continue;
                }
                catch (SocketException ex)
                {
                    socket.Dispose();
                    throw new IOException($"--metrics: can't listen on {inet.EndPoint}: {ex.Message}", ex);
                }
                endpoint._sockets.Add(socket);
                Log.Listening(logger, socket.LocalEndPoint!.ToString()!);
            }
        }
        catch
        {
            endpoint.Dispose();
            throw;
        }
        return endpoint;
    }

    /// <summary>Starts serving; <paramref name="health"/> gives null when healthy, else the reason.</summary>
    public void Start(Func<string?> health)
    {
        _health = health;
        _thread = new Thread(Serve) { IsBackground = true, Name = "postgrey-metrics" };
        _thread.Start();
    }

    private void Serve()
    {
        var ready = new List<Socket>(_sockets.Count);
        while (!_stopped)
        {
            ready.Clear();
            ready.AddRange(_sockets);
            try
            {
                Socket.Select(ready, null, null, 1_000_000);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return; // closed: stopping
            }
            foreach (Socket listener in ready)
            {
                Socket client;
                try
                {
                    client = listener.Accept();
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    continue;
                }
                using (client)
                {
                    try
                    {
                        Answer(client);
                    }
                    catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
                    {
                        Log.ClientError(_logger, ex.Message);
                    }
                }
            }
        }
    }

    private void Answer(Socket client)
    {
        client.ReceiveTimeout = (int)ClientTimeout.TotalMilliseconds;
        client.SendTimeout = (int)ClientTimeout.TotalMilliseconds;
        byte[] buffer = new byte[MaxRequestBytes];
        int length = 0;
        int end;
        while ((end = IndexOfHeaderEnd(buffer.AsSpan(0, length))) < 0)
        {
            if (length == buffer.Length)
            {
                Send(client, "431 Request Header Fields Too Large", "text/plain", "request too large\n", head: false);
                return;
            }
            int n = client.Receive(buffer, length, buffer.Length - length, SocketFlags.None);
            if (n == 0)
            {
                return;
            }
            length += n;
        }
        string requestLine = Encoding.ASCII.GetString(buffer, 0, Math.Max(0, buffer.AsSpan(0, end).IndexOf("\r\n"u8) is var eol and >= 0 ? eol : end));
        string[] parts = requestLine.Split(' ');
        if (parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
        {
            Send(client, "400 Bad Request", "text/plain", "bad request\n", head: false);
            return;
        }
        bool head = parts[0] == "HEAD";
        if (parts[0] != "GET" && !head)
        {
            Send(client, "405 Method Not Allowed", "text/plain", "GET only\n", head: false);
            return;
        }
        string path = parts[1];
        int query = path.IndexOf('?', StringComparison.Ordinal);
        if (query >= 0)
        {
            path = path[..query];
        }
        switch (path)
        {
            case "/metrics":
                _text.Clear();
                _collector.Write(_text);
                Send(client, "200 OK", "text/plain; version=0.0.4; charset=utf-8", _text.ToString(), head);
                break;
            case "/health":
                string? problem = _health();
                if (problem is null)
                {
                    Send(client, "200 OK", "text/plain; charset=utf-8", "ok\n", head);
                }
                else
                {
                    Send(client, "503 Service Unavailable", "text/plain; charset=utf-8", problem + "\n", head);
                }
                break;
            default:
                Send(client, "404 Not Found", "text/plain; charset=utf-8", "not found: /metrics and /health only\n", head);
                break;
        }
    }

    private static int IndexOfHeaderEnd(ReadOnlySpan<byte> data)
    {
        int i = data.IndexOf("\r\n\r\n"u8);
        return i < 0 ? -1 : i + 4;
    }

    private static void Send(Socket client, string status, string contentType, string body, bool head)
    {
        byte[] content = Encoding.UTF8.GetBytes(body);
        string header = $"HTTP/1.1 {status}\r\nContent-Type: {contentType}\r\nContent-Length: {content.Length}\r\nConnection: close\r\n\r\n";
        client.Send(Encoding.ASCII.GetBytes(header));
        if (!head)
        {
            client.Send(content);
        }
        client.Shutdown(SocketShutdown.Send);
    }

    public void Dispose()
    {
        _stopped = true;
        foreach (Socket socket in _sockets)
        {
            socket.Dispose();
        }
        _thread?.Join(TimeSpan.FromSeconds(2));
    }

    private static partial class Log
    {
        [LoggerMessage(5401, LogLevel.Information, "metrics on http://{EndPoint}/metrics", EventName = "MetricsListening")]
        public static partial void Listening(ILogger logger, string endPoint);

        [LoggerMessage(5402, LogLevel.Debug, "metrics client: {Message}", EventName = "MetricsClientError")]
        public static partial void ClientError(ILogger logger, string message);
    }
}
