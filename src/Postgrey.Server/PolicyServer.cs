using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Server.Epoll;

namespace Postgrey.Server;

/// <summary>
/// Listens on every --inet and --unix address and runs one <see cref="PolicyConnectionHandler"/>
/// task per connection. The sockets come bound (<see cref="PolicyListeners"/>) or are bound in
/// <see cref="StartAsync"/>, so a bind failure fails the start (non-zero exit) and the service is
/// ready only once every socket listens.
/// </summary>
public sealed partial class PolicyServer : BackgroundService
{
    private readonly ServerOptions _options;
    private readonly PolicyConnectionHandler _handler;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private long _nextConnectionId;
    private long _lastRefusalWarning;
    private PolicyListeners? _listeners;
    private bool _ownsListeners;
    private EpollTransport? _epoll;

    /// <summary><paramref name="listeners"/>: sockets bound (or inherited) before the host
    /// started, owned by whoever bound them (this server closes them at its stop, so that no
    /// new connection comes in while the others drain); null binds --inet/--unix in
    /// <see cref="StartAsync"/>, and those this server owns.</summary>
    public PolicyServer(ServerOptions options, PolicyConnectionHandler handler, ILogger<PolicyServer> logger, PolicyListeners? listeners = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _handler = handler;
        _logger = logger;
        _listeners = listeners;
    }

    /// <summary>The addresses actually bound (port 0 resolved).</summary>
    public IReadOnlyList<EndPoint> BoundEndPoints => _listeners?.Sockets.Select(l => l.LocalEndPoint!).ToList() ?? [];

    /// <summary>True when <paramref name="options"/> make connections be served by the epoll
    /// loop, whose hand-off of answers is cheap enough to run on the database writer's thread.</summary>
    public static bool UsesEpoll(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return EpollTransport.IsChosen(options.Transport);
    }

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        if (_listeners is null)
        {
            _listeners = PolicyListeners.Bind(_options, _logger);
            _ownsListeners = true;
        }
        if (EpollTransport.IsChosen(_options.Transport))
        {
            _epoll = new EpollTransport(_listeners.Sockets, _options, _handler, WarnRefused, _logger);
            _epoll.Start();
        }
        return base.StartAsync(cancellationToken);
    }

    /// <summary>On Linux the epoll loop serves every socket; elsewhere an accept loop per
    /// listener and a task per connection on .NET's sockets.</summary>
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        _epoll?.Completion ?? Task.WhenAll(_listeners!.Sockets.Select(l => AcceptLoopAsync(l, stoppingToken)));

    private async Task AcceptLoopAsync(Socket listener, CancellationToken stoppingToken)
    {
        int backoffMs = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stoppingToken);
                backoffMs = 0;
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException
                || (ex is SocketException { SocketErrorCode: SocketError.OperationAborted or SocketError.Interrupted }))
            {
                return; // stopping
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
            {
                continue; // the client gave up while in the backlog
            }
            catch (SocketException ex)
            {
                // Out of descriptors or buffers: back off instead of spinning.
                backoffMs = Math.Min(Math.Max(backoffMs * 2, 10), 1000);
                Log.AcceptFailed(_logger, ex.SocketErrorCode.ToString(), backoffMs);
                await Task.Delay(backoffMs, CancellationToken.None);
                continue;
            }

            if (_connections.Count >= _options.MaxConnections)
            {
                WarnRefused();
                client.Dispose();
                continue;
            }
            if (client.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
            {
                client.NoDelay = true;
            }
            long id = Interlocked.Increment(ref _nextConnectionId);
            ServerMetrics.Opened();
            _connections[id] = ServeAsync(id, client);
        }
    }

    private async Task ServeAsync(long id, Socket client)
    {
        await Task.Yield(); // leave the accept loop free at once
        string peer = client.RemoteEndPoint is IPEndPoint ip ? $"#{id} {ip}" : $"#{id} unix";
        try
        {
            await using var stream = new NetworkStream(client, ownsSocket: true);
            var transport = new DuplexPipe(
                PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true)),
                PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true)));
            await _handler.RunAsync(transport, peer, _stopping.Token);
        }
        finally
        {
            _connections.TryRemove(id, out _);
            ServerMetrics.Closed();
        }
    }

    private void WarnRefused()
    {
        ServerMetrics.Refused();
        long now = Environment.TickCount64;
        long last = Interlocked.Read(ref _lastRefusalWarning);
        if (now - last > 10_000 && Interlocked.CompareExchange(ref _lastRefusalWarning, now, last) == last)
        {
            Log.TooManyConnections(_logger, _options.MaxConnections);
        }
    }

    /// <summary>Closes the listeners first, then lets every connection finish the request it is
    /// answering, until <paramref name="cancellationToken"/> (the host's shutdown timeout).</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_epoll is not null)
        {
            await StopEpollAsync(cancellationToken);
            return;
        }
        CloseListeners();
        await _stopping.CancelAsync();
        await base.StopAsync(cancellationToken);
        Task[] open = _connections.Values.ToArray();
        if (open.Length > 0)
        {
            try
            {
                await Task.WhenAll(open).WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                Log.DrainTimedOut(_logger, _connections.Count);
            }
        }
    }

    private async Task StopEpollAsync(CancellationToken cancellationToken)
    {
        try
        {
            // The loop lets go of the listeners before they are closed: never accept(2) on a
            // descriptor number that may already be reused.
            await _epoll!.StopAcceptingAsync().WaitAsync(cancellationToken);
            CloseListeners();
            await _epoll.Completion.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            Log.DrainTimedOut(_logger, _epoll!.ConnectionCount);
        }
        catch (Exception) when (_epoll!.Completion.IsFaulted)
        {
            // Logged by the loop; the host learns of it from ExecuteAsync.
        }
        finally
        {
            await _stopping.CancelAsync();
            await base.StopAsync(CancellationToken.None);
        }
    }

    private void CloseListeners() => _listeners?.Dispose(); // closing twice is harmless

    public override void Dispose()
    {
        _epoll?.Dispose();
        if (_ownsListeners)
        {
            _listeners?.Dispose();
        }
        _stopping.Dispose();
        base.Dispose();
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    internal static partial class Log
    {
        [LoggerMessage(1003, LogLevel.Warning, "accept failed ({Error}); retrying in {Delay} ms", EventName = "AcceptFailed")]
        public static partial void AcceptFailed(ILogger logger, string error, int delay);

        [LoggerMessage(1004, LogLevel.Warning, "more than {Max} connections: closing new ones until some end (--max-connections)", EventName = "TooManyConnections")]
        public static partial void TooManyConnections(ILogger logger, int max);

        [LoggerMessage(1005, LogLevel.Warning, "{Count} connections still open at the end of the shutdown timeout", EventName = "DrainTimedOut")]
        public static partial void DrainTimedOut(ILogger logger, int count);
    }
}
