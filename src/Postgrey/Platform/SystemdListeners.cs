using System.Globalization;
using System.Net.Sockets;

namespace Postgrey.Platform;

/// <summary>
/// systemd socket activation (sd_listen_fds): the listening sockets systemd holds for
/// postgrey.socket arrive as descriptors 3, 4, ... with LISTEN_PID and LISTEN_FDS set. systemd
/// keeps them open across our restarts, so Postfix's connections wait in the backlog instead
/// of being refused.
/// </summary>
internal static class SystemdListeners
{
    private const int FirstDescriptor = 3;

    /// <summary>The sockets passed to this process, or none. The variables are removed so that
    /// no child takes them for its own.</summary>
    public static IReadOnlyList<Socket> Take()
    {
        string? pidText = Environment.GetEnvironmentVariable("LISTEN_PID");
        string? countText = Environment.GetEnvironmentVariable("LISTEN_FDS");
        if (pidText is null || countText is null)
        {
            return [];
        }
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        if (!int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid != Environment.ProcessId
            || !int.TryParse(countText, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count <= 0)
        {
            return []; // meant for another process
        }
        var sockets = new List<Socket>(count);
        for (int fd = FirstDescriptor; fd < FirstDescriptor + count; fd++)
        {
            if (OperatingSystem.IsLinux())
            {
                _ = Libc.Fcntl(fd, Libc.SetDescriptorFlags, Libc.CloseOnExec);
            }
            var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            if (socket.SocketType != SocketType.Stream)
            {
                socket.Dispose();
                throw new IOException($"descriptor {fd} from systemd is not a stream socket (use ListenStream= in postgrey.socket)");
            }
            sockets.Add(socket);
        }
        return sockets;
    }
}
