using Microsoft.Extensions.Hosting;
using Postgrey.Core.Storage;

namespace Postgrey.Monitoring;

/// <summary>
/// Healthy while every policy listener serves, the serving loop comes round, and the store
/// committed the last decision it ran (an idle service with no decision yet is healthy: nothing
/// failed). /health reports <see cref="Problem"/>; the systemd watchdog is pinged while
/// <see cref="Wedged"/> finds nothing, so that a restart comes only where a restart cures.
/// </summary>
internal sealed class HealthCheck(IHostApplicationLifetime lifetime, Func<Task?> servingTask, Func<long> loopStalledMilliseconds)
{
    /// <summary>How long the store may fail before the service counts as unhealthy: one slow
    /// batch or a brief lock is not worth an alert.</summary>
    public static TimeSpan StoreGrace { get; } = TimeSpan.FromSeconds(10);

    /// <summary>How long one turn of the serving loop may take (it comes round at least once a
    /// second when idle; a turn that commits a round waits for SQLite's write to the WAL).</summary>
    public static TimeSpan LoopGrace { get; } = TimeSpan.FromSeconds(10);

    /// <summary>Null when healthy, else the one-line reason.</summary>
    public string? Problem() => Wedged() ?? StoreProblem();

    /// <summary>
    /// What a restart cures: listeners that stopped, a loop stuck in one turn (a hung file
    /// system under a commit). A failing store is not: its decisions are answered DUNNO at
    /// once, and a PostgreSQL server that is down, a full disk or another program's lock are
    /// still there after a restart, which would only add a restart a minute to the outage.
    /// </summary>
    public string? Wedged()
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
        long stalled = loopStalledMilliseconds();
        if (stalled >= LoopGrace.TotalMilliseconds)
        {
            return $"policy loop stuck for {stalled / 1000} s";
        }
        return null;
    }

    private static string? StoreProblem() =>
        StoreMetrics.Failing is { } failing && failing.For >= StoreGrace
            ? $"store failing for {failing.For.TotalSeconds:0} s: {OneLine(failing.LastError)}"
            : null;

    private static string OneLine(string text)
    {
        int end = text.IndexOfAny(['\r', '\n']);
        return end < 0 ? text : text[..end];
    }
}
