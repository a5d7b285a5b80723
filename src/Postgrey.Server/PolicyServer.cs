using System.Net;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Server.Epoll;
using Postgrey.Server.Sockets;

namespace Postgrey.Server;

/// <summary>
/// Listens on every --inet and --unix address and serves their connections with the chosen
/// transport. The sockets come bound (<see cref="PolicyListeners"/>) or are bound in
/// <see cref="StartAsync"/>, so a bind failure fails the start (non-zero exit) and the service is
/// ready only once every socket listens.
/// </summary>
public sealed class PolicyServer : BackgroundService
{
    private readonly ServerOptions _options;
    private readonly PolicyConnectionHandler _handler;
    private readonly ILogger _logger;
    private readonly ConnectionGate _gate;
    private PolicyListeners? _listeners;
    private bool _ownsListeners;
    private IPolicyTransport? _transport;

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
        _gate = new ConnectionGate(options.MaxConnections, logger);
    }

    /// <summary>The addresses actually bound (port 0 resolved).</summary>
    public IReadOnlyList<EndPoint> BoundEndPoints => _listeners?.Sockets.Select(l => l.LocalEndPoint!).ToList() ?? [];

    /// <summary>True when <paramref name="options"/> make connections be served by the epoll
    /// loop, which only posts a finished commit to its own thread: cheap enough to run where
    /// the database commits.</summary>
    public static bool UsesEpoll(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return EpollLoop.IsChosen(options.Transport);
    }

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        if (_listeners is null)
        {
            _listeners = PolicyListeners.Bind(_options, _logger);
            _ownsListeners = true;
        }
        _transport = EpollLoop.IsChosen(_options.Transport)
            ? new EpollLoop(_listeners.Sockets, _gate, _handler, _logger)
            : new SocketTransport(_listeners.Sockets, _gate, _handler);
        _transport.Start();
        return base.StartAsync(cancellationToken);
    }

    /// <summary>How long the serving loop has been stuck in one turn (milliseconds; 0 when it is
    /// not, or has no loop): a hung file system under a decision committed on the loop.</summary>
    public long StalledMilliseconds => _transport?.StalledMilliseconds ?? 0;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => _transport!.Completion;

    /// <summary>Stops accepting and closes the listeners first, then lets every connection
    /// finish the request it is answering, until <paramref name="cancellationToken"/> (the
    /// host's shutdown timeout).</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_transport is null)
        {
            return;
        }
        try
        {
            // The transport lets go of the listeners before they are closed: the epoll loop
            // must never accept(2) on a descriptor number that may already be reused.
            await _transport.StopAcceptingAsync().WaitAsync(cancellationToken);
            CloseListeners();
            await _transport.Completion.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            ServerLog.DrainTimedOut(_logger, _gate.Open);
        }
        catch (Exception) when (_transport.Completion.IsFaulted)
        {
            // Logged by the transport; the host learns of it from ExecuteAsync.
        }
        finally
        {
            CloseListeners();
        }
        try
        {
            await base.StopAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // the drain timed out: said above
        }
    }

    private void CloseListeners() => _listeners?.Dispose(); // closing twice is harmless

    public override void Dispose()
    {
        _transport?.Dispose();
        if (_ownsListeners)
        {
            _listeners?.Dispose();
        }
        base.Dispose();
    }
}
