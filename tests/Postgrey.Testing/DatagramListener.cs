using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;

namespace Postgrey.Testing;

/// <summary>A Unix datagram socket that collects what is sent to it: a stand-in syslog daemon,
/// journald or systemd notify socket, listening on a real socket file.</summary>
public sealed class DatagramListener : IDisposable
{
    private readonly Socket _socket;
    private readonly ConcurrentQueue<byte[]> _received = new();
    private readonly Thread _reader;

    public DatagramListener(string path)
    {
        Path = path;
        _socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        _socket.Bind(new UnixDomainSocketEndPoint(path));
        File.SetUnixFileMode(path, (UnixFileMode)Convert.ToInt32("666", 8));
        _reader = new Thread(Read) { IsBackground = true };
        _reader.Start();
    }

    public string Path { get; }

    public IReadOnlyList<byte[]> Datagrams => _received.ToArray();

    public IReadOnlyList<string> Messages => _received.Select(d => Encoding.UTF8.GetString(d)).ToArray();

    private void Read()
    {
        var buffer = new byte[256 * 1024];
        while (true)
        {
            int n;
            try
            {
                n = _socket.Receive(buffer);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }
            _received.Enqueue(buffer[..n]);
        }
    }

    /// <summary>Waits for a message that matches and returns it.</summary>
    public async Task<string> WaitForAsync(Func<string, bool> match, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (DateTime.UtcNow < deadline)
        {
            if (Messages.FirstOrDefault(match) is { } message)
            {
                return message;
            }
            await Task.Delay(20);
        }
        throw new TimeoutException("no such datagram; received:\n" + string.Join('\n', Messages));
    }

    public void Dispose()
    {
        _socket.Dispose();
        _reader.Join(TimeSpan.FromSeconds(5));
        File.Delete(Path);
    }
}
