using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Hosting;

namespace Postgrey.Platform;

/// <summary>
/// sd_notify for when Microsoft.Extensions.Hosting.Systemd does not see systemd: it looks for
/// a parent process named "systemd" in /proc, which ProtectProc=invisible hides and other
/// service managers speaking the same protocol are not. NOTIFY_SOCKET itself is the promise
/// that someone waits for READY=1, so it is sent whenever that variable is set and the
/// library's lifetime is not the one in use.
/// </summary>
internal static class SystemdNotifier
{
    public static void Register(IHostApplicationLifetime lifetime)
    {
        ArgumentNullException.ThrowIfNull(lifetime);
        string? path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path) || Microsoft.Extensions.Hosting.Systemd.SystemdHelpers.IsSystemdService())
        {
            return;
        }
        lifetime.ApplicationStarted.Register(() => Notify(path, "READY=1"));
        lifetime.ApplicationStopping.Register(() => Notify(path, "STOPPING=1"));
    }

    private static void Notify(string path, string state)
    {
        // "@name" is an abstract socket: its address starts with a NUL byte.
        string address = path[0] == '@' ? "\0" + path[1..] : path;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(address));
            socket.Send(Encoding.ASCII.GetBytes(state));
        }
        catch (SocketException)
        {
            // no manager listens any more: nothing to tell
        }
    }
}
