using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;

namespace Postgrey.Platform;

/// <summary>
/// READY=1 and STOPPING=1 when Microsoft.Extensions.Hosting.Systemd does not see systemd: it
/// looks for a parent process named "systemd" in /proc, which ProtectProc=invisible hides and
/// other service managers speaking the same protocol are not. NOTIFY_SOCKET itself is the
/// promise that someone waits for READY=1, so the library's own notifier is driven here
/// whenever that variable is set and the library's lifetime is not the one in use.
/// </summary>
internal static class SystemdNotifier
{
    public static void Register(IHostApplicationLifetime lifetime)
    {
        ArgumentNullException.ThrowIfNull(lifetime);
        if (SystemdHelpers.IsSystemdService())
        {
            return; // AddSystemd's lifetime sends them
        }
        var notifier = new Microsoft.Extensions.Hosting.Systemd.SystemdNotifier();
        if (!notifier.IsEnabled)
        {
            return;
        }
        lifetime.ApplicationStarted.Register(() => notifier.Notify(ServiceState.Ready));
        lifetime.ApplicationStopping.Register(() => notifier.Notify(ServiceState.Stopping));
    }
}
