using System.Diagnostics;
using System.Diagnostics.Metrics;
using Postgrey.Core.Storage;
using Postgrey.Core.Telemetry;

namespace Postgrey.Hosting;

/// <summary>Maintenance runs (ok, failed, skipped: another host cleaned), their duration and the
/// rows they deleted; each run also refreshes the entry counts the store gauges show.</summary>
internal static class MaintenanceMetrics
{
    private static readonly Counter<long> Runs = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.maintenance.runs", "{run}", "Maintenance runs by result: ok, failed, skipped (another host sharing the store cleaned)");

    private static readonly Histogram<double> Duration = PostgreyMeter.Meter.CreateHistogram(
        "postgrey.maintenance.duration", "s", "Duration of a maintenance run",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300] });

    private static readonly Counter<long> Deleted = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.maintenance.deleted", "{row}", "Rows deleted by maintenance, by table: triplets, clients");

    public static void Finished(long started, MaintenanceReport report)
    {
        Duration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
        if (report.Skipped)
        {
            Runs.Add(1, new KeyValuePair<string, object?>("result", "skipped"));
            return;
        }
        Runs.Add(1, new KeyValuePair<string, object?>("result", "ok"));
        Deleted.Add(Math.Max(0, report.TripletsBefore - report.TripletsAfter), new KeyValuePair<string, object?>("table", "triplets"));
        Deleted.Add(Math.Max(0, report.ClientsBefore - report.ClientsAfter), new KeyValuePair<string, object?>("table", "clients"));
        StoreMetrics.Counted(report.TripletsAfter, report.ClientsAfter);
    }

    public static void Failed(long started)
    {
        Duration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
        Runs.Add(1, new KeyValuePair<string, object?>("result", "failed"));
    }
}
