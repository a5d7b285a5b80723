using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;

namespace Postgrey.Server;

/// <summary>
/// One connection: request after request until the client closes, a limit is broken, the
/// connection is idle too long, or the server stops. Transport-agnostic: tests drive it over
/// in-memory pipes, the server over sockets.
/// </summary>
public sealed partial class PolicyConnectionHandler
{
    private readonly GreylistEngine _engine;
    private readonly PolicyLimits _limits;
    private readonly bool _exim;
    private readonly ILogger _logger;

    public PolicyConnectionHandler(GreylistEngine engine, PolicyLimits limits, bool exim, ILogger<PolicyConnectionHandler> logger)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(logger);
        _engine = engine;
        _limits = WithTestIdleTimeout(limits);
        _exim = exim;
        _logger = logger;
    }

    /// <summary>
    /// Serves <paramref name="transport"/>. <paramref name="stopping"/> ends the wait for the next
    /// request; a request already read is still decided and answered.
    /// </summary>
    public async Task RunAsync(IDuplexPipe transport, string peer, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(transport);
        PipeReader input = transport.Input;
        PipeWriter output = transport.Output;
        var parser = new PolicyRequestParser(_limits);
        var request = new PolicyRequest();
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        // Armed when the wait for a request begins, not at each read: a trickle of bytes that
        // makes no request does not keep the connection open.
        idle.CancelAfter(_limits.IdleTimeout);
        try
        {
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await input.ReadAsync(idle.Token);
                }
                catch (OperationCanceledException)
                {
                    if (!stopping.IsCancellationRequested)
                    {
                        Log.IdleTimeout(_logger, peer, (int)_limits.IdleTimeout.TotalSeconds);
                    }
                    return;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                bool wrote = false;
                bool close = false;
                while (!close)
                {
                    PolicyReadStatus status = parser.TryRead(ref buffer, request);
                    if (status == PolicyReadStatus.NeedMoreData)
                    {
                        break;
                    }
                    if (status != PolicyReadStatus.Request)
                    {
                        close = OnBadInput(status, parser, peer);
                        continue;
                    }

                    // A request read before a stop is still answered: Postfix is waiting for it.
                    string action = await _engine.DecideAsync(request, CancellationToken.None);
                    PolicyResponseWriter.Write(output, action);
                    ServerMetrics.Answered(request);
                    wrote = true;
                    request.Reset();
                    close = _exim;
                }

                input.AdvanceTo(buffer.Start, buffer.End);
                if (wrote)
                {
                    FlushResult flush = await output.FlushAsync(CancellationToken.None);
                    if (flush.IsCompleted)
                    {
                        return; // the client stopped reading
                    }
                    idle.CancelAfter(_limits.IdleTimeout);
                }
                if (close || stopping.IsCancellationRequested)
                {
                    return;
                }
                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        Log.IncompleteRequest(_logger, peer, buffer.Length);
                    }
                    return;
                }
            }
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            Log.ConnectionError(_logger, peer, ex.Message);
        }
        catch (Exception ex)
        {
            Log.ConnectionFailed(_logger, peer, ex);
        }
        finally
        {
            await input.CompleteAsync();
            await output.CompleteAsync();
        }
    }

    internal GreylistEngine Engine => _engine;

    internal PolicyLimits Limits => _limits;

    /// <summary>One request per connection (--exim).</summary>
    internal bool Exim => _exim;

    /// <summary>Logs a garbage line or a broken limit; true when the connection must close.</summary>
    internal bool OnBadInput(PolicyReadStatus status, PolicyRequestParser parser, string peer)
    {
        switch (status)
        {
            case PolicyReadStatus.GarbageLine:
                Log.Garbage(_logger, parser.LastGarbage);
                return false;
            case PolicyReadStatus.LineTooLong:
                Log.LimitExceeded(_logger, peer, $"a line longer than {_limits.MaxLineBytes} bytes");
                return true;
            case PolicyReadStatus.TooManyAttributes:
                Log.LimitExceeded(_logger, peer, $"a request of more than {_limits.MaxAttributesPerRequest} attributes");
                return true;
            case PolicyReadStatus.RequestTooLarge:
                Log.LimitExceeded(_logger, peer, $"a request larger than {_limits.MaxRequestBytes} bytes");
                return true;
            default:
                throw new ArgumentOutOfRangeException(nameof(status), status, null);
        }
    }

    /// <summary>
    /// The environment variable POSTGREY_TEST_IDLE_TIMEOUT_MS, for tests only: replaces the idle
    /// timeout (600 s, no flag) so that a test of the service as a process can see it act. Not a
    /// setting for production: it is unsupported and may go.
    /// </summary>
    private static PolicyLimits WithTestIdleTimeout(PolicyLimits limits) =>
        int.TryParse(Environment.GetEnvironmentVariable("POSTGREY_TEST_IDLE_TIMEOUT_MS"), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int ms) && ms > 0
            ? limits with { IdleTimeout = TimeSpan.FromMilliseconds(ms) }
            : limits;

    private static bool IsConnectionError(Exception ex) =>
        ex is IOException or SocketException or ObjectDisposedException
        || ex.InnerException is SocketException;

    internal static partial class Log
    {
        [LoggerMessage(2001, LogLevel.Warning, "ignoring garbage: <{Line}>", EventName = "Garbage")]
        public static partial void Garbage(ILogger logger, string line);

        [LoggerMessage(2002, LogLevel.Warning, "{Peer} sent {What}; closing the connection", EventName = "LimitExceeded")]
        public static partial void LimitExceeded(ILogger logger, string peer, string what);

        [LoggerMessage(2003, LogLevel.Debug, "{Peer} idle for {Seconds} s; closing the connection", EventName = "IdleTimeout")]
        public static partial void IdleTimeout(ILogger logger, string peer, int seconds);

        [LoggerMessage(2004, LogLevel.Debug, "{Peer} closed the connection in the middle of a request ({Bytes} bytes unanswered)", EventName = "IncompleteRequest")]
        public static partial void IncompleteRequest(ILogger logger, string peer, long bytes);

        [LoggerMessage(2005, LogLevel.Debug, "{Peer}: connection error: {Message}", EventName = "ConnectionError")]
        public static partial void ConnectionError(ILogger logger, string peer, string message);

        [LoggerMessage(2006, LogLevel.Error, "{Peer}: connection failed", EventName = "ConnectionFailed")]
        public static partial void ConnectionFailed(ILogger logger, string peer, Exception exception);
    }
}
