using Microsoft.Extensions.Hosting;
using Postgrey.Core.Storage;

namespace Postgrey.Monitoring;

/// <summary>
/// Healthy while every policy listener serves and the store committed the last decision it ran
/// (an idle service with no decision yet is healthy: nothing failed). Read by /health and by
/// the systemd watchdog, which is pinged only while healthy.
/// </summary>
internal sealed class HealthCheck(IHostApplicationLifetime lifetime, Func<Task?> servingTask)
{
    /// <summary>How long the store may fail before the service counts as unhealthy: one slow
    /// batch or a brief lock is not worth a restart.</summary>
    public static TimeSpan StoreGrace { get; } = TimeSpan.FromSeconds(10);

    /// <summary>Null when healthy, else the one-line reason.</summary>
    public string? Problem()
    {
        if (!lifetime.ApplicationStarted.IsCancellationRequested)
        {
            return "starting";
        }
        if (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            return "stopping";
        }
        if (servingTask() is { IsCompleted: true } serving)
        {
            return serving.IsFaulted ? $"policy listeners stopped: {serving.Exception!.InnerException!.Message}" : "policy listeners stopped";
        }
        if (StoreMetrics.Failing is { } failing && failing.For >= StoreGrace)
        {
            return $"store failing for {failing.For.TotalSeconds:0} s: {OneLine(failing.LastError)}";
        }
        return null;
    }

    private static string OneLine(string text)
    {
        int end = text.IndexOfAny(['\r', '\n']);
        return end < 0 ? text : text[..end];
    }
}
