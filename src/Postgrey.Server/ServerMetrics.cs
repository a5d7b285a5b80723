using System.Diagnostics;
using System.Diagnostics.Metrics;
using Postgrey.Core.Protocol;
using Postgrey.Core.Telemetry;

namespace Postgrey.Server;

/// <summary>
/// The server's instruments, each fed by a one-line call from the transports: connections
/// opened, closed and refused (--max-connections), and the time from a request read to its
/// answer written.
/// </summary>
public static class ServerMetrics
{
    private static readonly UpDownCounter<long> OpenConnections = PostgreyMeter.Meter.CreateUpDownCounter<long>(
        "postgrey.connections.open", "{connection}", "Policy connections open now");

    private static readonly Counter<long> AcceptedConnections = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.connections.accepted", "{connection}", "Policy connections accepted");

    private static readonly Counter<long> RefusedConnections = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.connections.refused", "{connection}", "Policy connections closed at once: --max-connections were open");

    private static readonly Histogram<double> RequestDuration = PostgreyMeter.Meter.CreateHistogram(
        "postgrey.request.duration", "s", "Time from a policy request read to its answer written",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = PostgreyMeter.ShortSeconds });

    public static void Opened()
    {
        OpenConnections.Add(1);
        AcceptedConnections.Add(1);
    }

    public static void Closed() => OpenConnections.Add(-1);

    public static void Refused() => RefusedConnections.Add(1);

    /// <summary>The answer to <paramref name="request"/> is written (its <see cref="PolicyRequest.ReceivedTimestamp"/> was set when it was read).</summary>
    public static void Answered(PolicyRequest request)
    {
        if (RequestDuration.Enabled && request.ReceivedTimestamp != 0)
        {
            RequestDuration.Record(Stopwatch.GetElapsedTime(request.ReceivedTimestamp).TotalSeconds);
        }
    }
}
