using System.Diagnostics.Metrics;

namespace Postgrey.Core.Telemetry;

/// <summary>
/// The one <see cref="Meter"/> every instrument of the service is created on. With no listener
/// (no --metrics) a measurement is a check of an empty list, so instruments cost nothing when off.
/// Names follow OpenTelemetry's conventions (dots, a unit); the exporter maps them to
/// Prometheus's (<c>postgrey.decisions</c> counts as <c>postgrey_decisions_total</c>).
/// </summary>
public static class PostgreyMeter
{
    public const string Name = "Postgrey";

    public static Meter Meter { get; } = new(Name, VersionInfo());

    /// <summary>Bucket bounds, in seconds, of the histograms of short waits (answers, commits).</summary>
    public static IReadOnlyList<double> ShortSeconds { get; } =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static string VersionInfo() => typeof(PostgreyMeter).Assembly.GetName().Version?.ToString() ?? "";
}
