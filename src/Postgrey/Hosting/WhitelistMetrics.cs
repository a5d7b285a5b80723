using System.Diagnostics.Metrics;
using Postgrey.Core.Telemetry;
using Postgrey.Core.Whitelists;

namespace Postgrey.Hosting;

/// <summary>The whitelist entries in force, by kind, and the reloads (SIGHUP) by result.</summary>
internal static class WhitelistMetrics
{
    private static readonly Counter<long> Reloads = PostgreyMeter.Meter.CreateCounter<long>(
        "postgrey.whitelist.reloads", "{reload}", "Whitelist reloads (SIGHUP) by result: ok, failed (the previous lists stay in force)");

    private static WhitelistProvider? s_provider;

    private static readonly ObservableGauge<long> Entries = PostgreyMeter.Meter.CreateObservableGauge(
        "postgrey.whitelist.entries", Observe, "{entry}",
        "Whitelist entries in force, by kind: client_name, client_regex, client_network, recipient");

    /// <summary>The lists the gauge reads at each scrape.</summary>
    public static void Watch(WhitelistProvider provider)
    {
        s_provider = provider;
        _ = Entries;
    }

    public static void Reloaded(bool ok) =>
        Reloads.Add(1, new KeyValuePair<string, object?>("result", ok ? "ok" : "failed"));

    private static IEnumerable<Measurement<long>> Observe()
    {
        if (s_provider?.Current is not { } lists)
        {
            return [];
        }
        return
        [
            new(lists.Clients.NameCount, new KeyValuePair<string, object?>("kind", "client_name")),
            new(lists.Clients.RegexCount, new KeyValuePair<string, object?>("kind", "client_regex")),
            new(lists.Clients.NetworkCount, new KeyValuePair<string, object?>("kind", "client_network")),
            new(lists.Recipients.Count, new KeyValuePair<string, object?>("kind", "recipient")),
        ];
    }
}
