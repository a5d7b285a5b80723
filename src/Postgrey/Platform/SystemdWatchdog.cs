using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;

namespace Postgrey.Platform;

/// <summary>
/// WatchdogSec= in the unit: systemd sets WATCHDOG_USEC and restarts the service when no
/// WATCHDOG=1 comes within it. Pinged at half that interval, and only while the service is not
/// wedged (listeners stopped, the serving loop stuck), so that such a service is restarted.
/// </summary>
internal static class SystemdWatchdog
{
    public static void Register(IHostApplicationLifetime lifetime, Func<string?> problem)
    {
        ArgumentNullException.ThrowIfNull(lifetime);
        ArgumentNullException.ThrowIfNull(problem);
        if (!long.TryParse(Environment.GetEnvironmentVariable("WATCHDOG_USEC"), NumberStyles.None, CultureInfo.InvariantCulture, out long usec) || usec <= 0)
        {
            return;
        }
        // WATCHDOG_PID, when set, names the process meant (not a child that inherited it).
        if (Environment.GetEnvironmentVariable("WATCHDOG_PID") is { Length: > 0 } pid && pid != Environment.ProcessId.ToString(CultureInfo.InvariantCulture))
        {
            return;
        }
        var notifier = new Microsoft.Extensions.Hosting.Systemd.SystemdNotifier();
        if (!notifier.IsEnabled)
        {
            return;
        }
        var watchdog = new ServiceState("WATCHDOG=1");
        TimeSpan every = TimeSpan.FromMilliseconds(Math.Max(usec / 2000, 100));
        Timer? timer = null;
        lifetime.ApplicationStarted.Register(() =>
            timer = new Timer(_ =>
            {
                if (problem() is null)
                {
                    notifier.Notify(watchdog);
                }
            }, null, TimeSpan.Zero, every));
        lifetime.ApplicationStopping.Register(() => timer?.Dispose());
    }
}
