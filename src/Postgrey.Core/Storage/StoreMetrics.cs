using System.Diagnostics;
using System.Diagnostics.Metrics;
using Postgrey.Core.Telemetry;

namespace Postgrey.Core.Storage;

/// <summary>
/// The store's instruments, shared by both stores: commit time and decisions per commit (group
/// commit), failures as the engine sees them, the entries counted at maintenance; and the state
/// /health reads: whether the last decision the store ran was committed.
/// </summary>
public static class StoreMetrics
{
    private static readonly Histogram<double> CommitDuration = PostgreyMeter.Meter.CreateHistogram(
        "postgrey.store.commit.duration", "s", "Time from the start of a transaction to its commit, for each group commit",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = PostgreyMeter.ShortSeconds });

    private static readonly Histogram<double> DecisionsPerCommit = PostgreyMeter.Meter.CreateHistogram(
        "postgrey.store.commit.decisions", "{decision}", "Decisions committed by one group commit",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] });

    private static readonly Counter<long> Errors = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.store.errors", "{decision}", "Decisions the store failed (answered DUNNO), by kind: timeout, unavailable, error");

    private static long s_triplets = -1;
    private static long s_clients = -1;
    private static long s_lastSuccess;
    private static long s_failingSince;
    private static string? s_lastError;

    private static readonly ObservableGauge<long> Triplets = PostgreyMeter.Meter.CreateObservableGauge(
        "postgrey.store.triplets", ObserveTriplets, "{triplet}", "Triplets in the database, counted at the last maintenance run");

    private static readonly ObservableGauge<long> Clients = PostgreyMeter.Meter.CreateObservableGauge(
        "postgrey.store.clients", ObserveClients, "{client}", "Auto-whitelist entries in the database, counted at the last maintenance run");

    /// <summary>A group commit of <paramref name="decisions"/> that began at <paramref name="started"/> (a Stopwatch timestamp).</summary>
    public static void Committed(long started, int decisions)
    {
        if (CommitDuration.Enabled)
        {
            CommitDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            DecisionsPerCommit.Record(decisions);
        }
    }

    /// <summary>A decision the store committed.</summary>
    public static void Succeeded()
    {
        Volatile.Write(ref s_lastSuccess, Stopwatch.GetTimestamp());
        if (Volatile.Read(ref s_failingSince) != 0)
        {
            Volatile.Write(ref s_failingSince, 0);
        }
    }

    /// <summary>A decision the store failed; <paramref name="kind"/>: timeout, unavailable or error.</summary>
    public static void Failed(string kind, string message)
    {
        Errors.Add(1, new KeyValuePair<string, object?>("kind", kind));
        s_lastError = message;
        if (Volatile.Read(ref s_failingSince) == 0)
        {
            Volatile.Write(ref s_failingSince, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>Null while the last decision run by the store was committed (or none ran yet);
    /// else since when it fails and the last error.</summary>
    public static (TimeSpan For, string LastError)? Failing
    {
        get
        {
            long since = Volatile.Read(ref s_failingSince);
            return since == 0 ? null : (Stopwatch.GetElapsedTime(since), s_lastError ?? "");
        }
    }

    /// <summary>Entries left by a maintenance run: what the gauges show until the next one.</summary>
    public static void Counted(long triplets, long clients)
    {
        _ = Triplets; // created with the first count, at the latest
        _ = Clients;
        Volatile.Write(ref s_triplets, triplets);
        Volatile.Write(ref s_clients, clients);
    }

    // No measurement before the first maintenance run: an unknown count is not zero.
    private static IEnumerable<Measurement<long>> ObserveTriplets() => Observe(ref s_triplets);

    private static IEnumerable<Measurement<long>> ObserveClients() => Observe(ref s_clients);

    private static Measurement<long>[] Observe(ref long value)
    {
        long v = Volatile.Read(ref value);
        return v < 0 ? [] : [new Measurement<long>(v)];
    }
}
