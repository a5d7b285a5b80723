using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Storage;

namespace Postgrey.Server;

/// <summary>
/// Opens a <see cref="PolicySession"/> per connection, and serves one over a pipe (the portable
/// transport; tests may drive it over in-memory pipes): request after request until the client
/// closes, a limit is broken, the connection is idle too long, or the server stops.
/// </summary>
public sealed class PolicyConnectionHandler
{
    private readonly SessionSettings _settings;

    public PolicyConnectionHandler(GreylistEngine engine, PolicyLimits limits, bool exim, ILogger<PolicyConnectionHandler> logger)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentNullException.ThrowIfNull(logger);
        _settings = new SessionSettings(engine, WithTestIdleTimeout(limits), exim, logger);
    }

    internal PolicySession Open(string peer) => new(_settings, peer);

    /// <summary>The store's run-to-completion rounds, if it has them.</summary>
    internal IDecisionRounds? Rounds => _settings.Engine.Rounds;

    /// <summary>
    /// Serves <paramref name="transport"/>. <paramref name="stopping"/> ends the wait for the next
    /// request; a request already read is still decided and answered.
    /// </summary>
    public Task RunAsync(IDuplexPipe transport, string peer, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(transport);
        return RunAsync(transport, Open(peer), stopping);
    }

    internal static async Task RunAsync(IDuplexPipe transport, PolicySession session, CancellationToken stopping)
    {
        PipeReader input = transport.Input;
        PipeWriter output = transport.Output;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        // Armed when the wait for a request begins, not at each read: a trickle of bytes that
        // makes no request does not keep the connection open.
        idle.CancelAfter(session.IdleTimeout);
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
                        session.OnIdle();
                    }
                    return;
                }

                var buffer = result.Buffer;
                bool wrote = false;
                bool close = false;
                while (!close)
                {
                    SessionInput read = session.Read(ref buffer);
                    if (read == SessionInput.NeedMoreData)
                    {
                        break;
                    }
                    if (read == SessionInput.Close)
                    {
                        close = true;
                        break;
                    }
                    // A request read before a stop is still answered: Postfix is waiting for it.
                    string action = await session.DecideAsync();
                    close = session.Answer(action, output);
                    wrote = true;
                }

                input.AdvanceTo(buffer.Start, buffer.End);
                if (wrote)
                {
                    FlushResult flush = await output.FlushAsync(CancellationToken.None);
                    if (flush.IsCompleted)
                    {
                        return; // the client stopped reading
                    }
                    idle.CancelAfter(session.IdleTimeout);
                }
                if (close || stopping.IsCancellationRequested)
                {
                    return;
                }
                if (result.IsCompleted)
                {
                    session.OnClientClosed(buffer.Length);
                    return;
                }
            }
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            session.OnConnectionError(ex.Message);
        }
        catch (Exception ex)
        {
            session.OnFailed(ex);
        }
        finally
        {
            await input.CompleteAsync();
            await output.CompleteAsync();
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
}
