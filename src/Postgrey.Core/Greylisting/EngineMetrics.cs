using System.Diagnostics.Metrics;
using Postgrey.Core.Telemetry;

namespace Postgrey.Core.Greylisting;

/// <summary>
/// The decisions, by postgrey's own words: action (pass, greylist, or dunno for a request that
/// could not be decided) and reason (client whitelist, recipient whitelist, client AWL, triplet
/// found, new, early-retry; for dunno: store error, bad request). No label holds an address,
/// a sender or a recipient: few series, and nothing personal in the metrics.
/// </summary>
internal static class EngineMetrics
{
    private static readonly Counter<long> Decisions = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.decisions", "{decision}", "Decisions by action and reason (in --dry-run, greylist counts what would have been deferred)");

    private static readonly Histogram<double> RetryDelay = PostgreyMeter.Meter.CreateHistogram(
        "postgrey.retry.delay", "s", "How long a greylisted triplet took to come back and pass",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800] });

    private static readonly Counter<long> AutoWhitelisted = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.auto_whitelisted", "{client}", "Clients that reached the auto-whitelist");

    public static void Decided(string action, string reason)
    {
        if (Decisions.Enabled)
        {
            Decisions.Add(1, new KeyValuePair<string, object?>("action", action), new KeyValuePair<string, object?>("reason", reason));
        }
    }

    /// <summary>A triplet passed for the first time after <paramref name="seconds"/>.</summary>
    public static void Retried(long seconds) => RetryDelay.Record(seconds);

    public static void ReachedAutoWhitelist() => AutoWhitelisted.Add(1);
}
