using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;

namespace Postgrey.Server.Sockets;

/// <summary>
/// The portable transport (Windows, macOS, or <c>--transport=sockets</c>): an accept loop per
/// listener on .NET's sockets and a task per connection, reading and writing through pipes.
/// </summary>
internal sealed class SocketTransport(IReadOnlyList<Socket> listeners, ConnectionGate gate, PolicyConnectionHandler handler) : IPolicyTransport
{
    private readonly ConcurrentDictionary<long, Task> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task _accepting = Task.CompletedTask;
    private Task? _completion;

    public Task Completion => _completion ?? Task.CompletedTask;

    // Connections run on the thread pool: no loop of its own to be stuck.
    public long StalledMilliseconds => 0;

    public void Start()
    {
        _accepting = Task.WhenAll(listeners.Select(l => Task.Run(() => AcceptLoopAsync(l))));
        _completion = DrainAsync();
    }

    public async Task StopAcceptingAsync()
    {
        // Also ends every connection's wait for its next request.
        await _stopping.CancelAsync();
        await _accepting;
    }

    private async Task DrainAsync()
    {
        await _accepting;
        // No connection comes after the accept loops: these are the last.
        await Task.WhenAll(_connections.Values);
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        int backoffMs = 0;
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stopping.Token);
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
                await Task.Delay(gate.AcceptFailed(ref backoffMs, ex.SocketErrorCode.ToString()), CancellationToken.None);
                continue;
            }

            if (!gate.TryAdmit(client.AddressFamily, out Admission admission))
            {
                client.Dispose();
                continue;
            }
            if (admission.NoDelay)
            {
                client.NoDelay = true;
            }
            _connections[admission.Id] = ServeAsync(admission, client);
        }
    }

    private async Task ServeAsync(Admission admission, Socket client)
    {
        await Task.Yield(); // leave the accept loop free at once
        try
        {
            PolicySession session = handler.Open(admission.Peer(client.RemoteEndPoint));
            await using var stream = new NetworkStream(client, ownsSocket: true);
            var transport = new DuplexPipe(
                PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true)),
                PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true)));
            await PolicyConnectionHandler.RunAsync(transport, session, _stopping.Token);
        }
        finally
        {
            _connections.TryRemove(admission.Id, out _);
            gate.Release();
        }
    }

    public void Dispose() => _stopping.Dispose();

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
