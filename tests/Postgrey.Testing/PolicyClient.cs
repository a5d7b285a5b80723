using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Postgrey.Testing;

/// <summary>A raw policy client over a real socket: writes exact bytes, reads replies.</summary>
public sealed class PolicyClient : IAsyncDisposable, IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StringBuilder _pending = new();
    private readonly byte[] _buffer = new byte[8192];

    private PolicyClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<PolicyClient> ConnectAsync(EndPoint endPoint, CancellationToken ct = default)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(endPoint, ct);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new PolicyClient(socket);
    }

    public Task SendAsync(string text, CancellationToken ct = default) => SendAsync(Encoding.UTF8.GetBytes(text), ct);

    public async Task SendAsync(byte[] bytes, CancellationToken ct = default) => await _stream.WriteAsync(bytes, ct);

    /// <summary>Reads one reply and returns its action (the text after "action="); null when the
    /// server closed the connection first.</summary>
    public async Task<string?> ReadActionAsync(CancellationToken ct = default) => await ReadActionAsync(TimeSpan.FromSeconds(30), ct);

    /// <summary>As <see cref="ReadActionAsync(CancellationToken)"/>, failing with
    /// <see cref="TimeoutException"/> when no reply comes within <paramref name="timeout"/>.</summary>
    public async Task<string?> ReadActionAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        while (true)
        {
            string text = _pending.ToString();
            int end = text.IndexOf("\n\n", StringComparison.Ordinal);
            if (end >= 0)
            {
                _pending.Remove(0, end + 2);
                string line = text[..end];
                if (!line.StartsWith("action=", StringComparison.Ordinal) || line.Contains('\n'))
                {
                    throw new InvalidDataException($"malformed reply: {line}");
                }
                return line["action=".Length..];
            }
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(timeout);
            int n;
            try
            {
                n = await _stream.ReadAsync(_buffer, limit.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException("no reply within " + timeout);
            }
            if (n == 0)
            {
                return null;
            }
            _pending.Append(Encoding.UTF8.GetString(_buffer, 0, n));
        }
    }

    public async Task<string?> AskAsync(string request, CancellationToken ct = default)
    {
        await SendAsync(request, ct);
        return await ReadActionAsync(ct);
    }

    /// <summary>True when the server closed the connection (reads 0 bytes) within the timeout.</summary>
    public async Task<bool> IsClosedByServerAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (true)
            {
                int n = await _stream.ReadAsync(_buffer, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true; // reset
        }
    }

    public void Dispose() => _stream.Dispose();

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}
