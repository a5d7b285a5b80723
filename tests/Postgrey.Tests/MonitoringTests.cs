using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>
/// --metrics, /health and --dry-run on the service as a process: scraped by a real Prometheus
/// (Debian's, with a config and data directory of the test's own), read back through its query
/// API, and the exposition checked by promtool.
/// </summary>
public sealed partial class MonitoringTests : IDisposable
{
    private const string Prometheus = "/usr/bin/prometheus";
    private const string Promtool = "/usr/bin/promtool";
    private const long T0 = 1_700_000_000;
    private readonly TempDirectory _dir = new();
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public MonitoringTests()
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    public void Dispose()
    {
        _http.Dispose();
        _dir.Dispose();
    }

    private string[] Args(int policyPort, int metricsPort, params string[] extra) =>
    [
        $"--inet=127.0.0.1:{policyPort}",
        $"--metrics=127.0.0.1:{metricsPort}",
        $"--dbdir={_dir.File("db")}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        "--allow-test-time",
        .. extra,
    ];

    private async Task<(PolicyServerProcess Server, int PolicyPort, int MetricsPort)> StartAsync(params string[] extra)
    {
        int policyPort = PolicyServerProcess.FreePort();
        int metricsPort = PolicyServerProcess.FreePort();
        var server = PostgreyProcess.Start(Args(policyPort, metricsPort, extra));
        await server.WaitForLineAsync(l => l == $"metrics on http://127.0.0.1:{metricsPort}/metrics");
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, policyPort), TimeSpan.FromSeconds(30));
        await WaitForHealthAsync(metricsPort, HttpStatusCode.OK);
        return (server, policyPort, metricsPort);
    }

    private static async Task<string?> AskAsync(int port, string request)
    {
        await using var client = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return await client.AskAsync(request);
    }

    private async Task<(HttpStatusCode Status, string Body)> GetAsync(int port, string path)
    {
        using HttpResponseMessage response = await _http.GetAsync(new Uri($"http://127.0.0.1:{port}{path}"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private async Task<string> WaitForHealthAsync(int port, HttpStatusCode expected, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            var (status, body) = await GetAsync(port, "/health");
            if (status == expected || DateTime.UtcNow > deadline)
            {
                Assert.Equal(expected, status);
                return body;
            }
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task Prometheus_ScrapesTheDecisionsAndTheRest()
    {
        Requires.Program(Prometheus, "prometheus");
        var (server, policyPort, metricsPort) = await StartAsync();
        await using var _ = server;
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(policyPort, Requests.Policy(testTime: T0)), StringComparison.Ordinal);
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(policyPort, Requests.Policy(testTime: T0 + 60)), StringComparison.Ordinal);
        Assert.StartsWith("PREPEND X-Greylist", await AskAsync(policyPort, Requests.Policy(testTime: T0 + 400, instance: "i1")), StringComparison.Ordinal);
        Assert.Equal("DUNNO", await AskAsync(policyPort, Requests.Policy(recipient: "postmaster@example.org")));

        await using var prometheus = await StartPrometheusAsync(metricsPort);
        await prometheus.WaitForValueAsync("postgrey_decisions_total{action=\"greylist\",reason=\"new\"}", 1);
        await prometheus.WaitForValueAsync("postgrey_decisions_total{action=\"greylist\",reason=\"early-retry\"}", 1);
        await prometheus.WaitForValueAsync("postgrey_decisions_total{action=\"pass\",reason=\"triplet found\"}", 1);
        await prometheus.WaitForValueAsync("postgrey_decisions_total{action=\"pass\",reason=\"recipient whitelist\"}", 1);
        await prometheus.WaitForValueAsync("postgrey_request_duration_seconds_count", 4);
        await prometheus.WaitForValueAsync("postgrey_connections_accepted_total", 5); // and the probe of WaitUntilListeningAsync
        await prometheus.WaitForValueAsync("postgrey_connections_open", 0);
        await prometheus.WaitForValueAsync("postgrey_retry_delay_seconds_sum", 400);
        await prometheus.WaitForValueAsync("postgrey_store_commit_decisions_sum", 3);
        await prometheus.WaitForValueAsync("postgrey_whitelist_entries{kind=\"recipient\"}", 1);
        await prometheus.WaitForValueAsync("count(process_resident_memory_bytes > 1000000)", 1);
        await prometheus.WaitForValueAsync("count(dotnet_gc_collections_total)", 3);
    }

    [Fact]
    public async Task NoSeries_CarriesAnAddressOrASender()
    {
        var (server, policyPort, metricsPort) = await StartAsync();
        await using var _ = server;
        await AskAsync(policyPort, Requests.Policy(testTime: T0));
        string text = (await GetAsync(metricsPort, "/metrics")).Body;
        Assert.Contains("postgrey_decisions_total{action=\"greylist\",reason=\"new\"} 1\n", text, StringComparison.Ordinal);
        foreach (string personal in new[] { "192.0.2", "example.net", "example.org", "mx.example" })
        {
            Assert.DoesNotContain(personal, text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Exposition_PassesPromtool()
    {
        Requires.Program(Promtool, "prometheus");
        var (server, policyPort, metricsPort) = await StartAsync();
        await using var _ = server;
        await AskAsync(policyPort, Requests.Policy(testTime: T0));
        await AskAsync(policyPort, Requests.Policy(testTime: T0 + 400));
        await AskAsync(policyPort, "request=smtpd_access_policy\nclient_address=nonsense\nclient_name=x\nsender=\nrecipient=r@x\n\n");
        string text = (await GetAsync(metricsPort, "/metrics")).Body;
        Assert.Contains("postgrey_decisions_total{action=\"dunno\",reason=\"bad request\"} 1\n", text, StringComparison.Ordinal);

        var info = new ProcessStartInfo(Promtool, ["check", "metrics"]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var promtool = Process.Start(info)!;
        await promtool.StandardInput.WriteAsync(text);
        promtool.StandardInput.Close();
        string output = await promtool.StandardOutput.ReadToEndAsync() + await promtool.StandardError.ReadToEndAsync();
        await promtool.WaitForExitAsync();
        Assert.True(promtool.ExitCode == 0 && output.Length == 0, $"promtool: exit {promtool.ExitCode}: {output}");
    }

    [Fact]
    public async Task Health_Is503WithTheReasonWhileTheStoreFails_And200OnceItWorks()
    {
        var (server, policyPort, metricsPort) = await StartAsync();
        await using var _ = server;
        Assert.Equal("ok\n", (await GetAsync(metricsPort, "/health")).Body);
        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(policyPort, Requests.Policy(testTime: T0)), StringComparison.Ordinal);

        // Another program holds the write lock: the store fails every decision (DUNNO after its time-out).
        using (var holder = new SqliteConnection($"Data Source={_dir.File("db")}/postgrey.sqlite3;Pooling=False"))
        {
            holder.Open();
            using (var begin = holder.CreateCommand())
            {
                begin.CommandText = "BEGIN EXCLUSIVE";
                begin.ExecuteNonQuery();
            }
            Assert.Equal("DUNNO", await AskAsync(policyPort, Requests.Policy(recipient: "c@example.org", testTime: T0)));
            string reason = await WaitForHealthAsync(metricsPort, HttpStatusCode.ServiceUnavailable);
            Assert.Matches(@"^store failing for \d+ s: the database (is locked by another process|did not answer within) .*\n$", reason);
            Assert.Single(reason.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            string metrics = (await GetAsync(metricsPort, "/metrics")).Body;
            Assert.Contains("postgrey_store_errors_total{kind=\"timeout\"} 1\n", metrics, StringComparison.Ordinal);
            Assert.Contains("postgrey_decisions_total{action=\"dunno\",reason=\"store error\"} 1\n", metrics, StringComparison.Ordinal);
        }

        Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(policyPort, Requests.Policy(recipient: "d@example.org", testTime: T0)), StringComparison.Ordinal);
        Assert.Equal("ok\n", await WaitForHealthAsync(metricsPort, HttpStatusCode.OK, TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public async Task Watchdog_KeepsPingingWhileTheStoreFails_ARestartWouldNotCureIt()
    {
        // systemd's side of the protocol: NOTIFY_SOCKET and WATCHDOG_USEC, as a unit with WatchdogSec=1 gives.
        string socketPath = _dir.File("notify");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(socketPath));
        int policyPort = PolicyServerProcess.FreePort();
        int metricsPort = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.StartWith(
            new Dictionary<string, string> { ["NOTIFY_SOCKET"] = socketPath, ["WATCHDOG_USEC"] = "1000000" },
            Args(policyPort, metricsPort));
        await server.WaitForLineAsync(l => l == $"metrics on http://127.0.0.1:{metricsPort}/metrics");
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, policyPort), TimeSpan.FromSeconds(30));
        await WaitForHealthAsync(metricsPort, HttpStatusCode.OK);
        await ReceiveWatchdogAsync(notify);

        using var holder = new SqliteConnection($"Data Source={_dir.File("db")}/postgrey.sqlite3;Pooling=False");
        holder.Open();
        using (var begin = holder.CreateCommand())
        {
            begin.CommandText = "BEGIN EXCLUSIVE";
            begin.ExecuteNonQuery();
        }
        Assert.Equal("DUNNO", await AskAsync(policyPort, Requests.Policy(testTime: T0)));
        await WaitForHealthAsync(metricsPort, HttpStatusCode.ServiceUnavailable);
        while (notify.Available > 0)
        {
            notify.Receive(new byte[256]); // the pings from before
        }
        await ReceiveWatchdogAsync(notify);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await GetAsync(metricsPort, "/health")).Status);
    }

    private static async Task ReceiveWatchdogAsync(Socket notify)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        byte[] buffer = new byte[256];
        while (true)
        {
            int n = await notify.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            if (System.Text.Encoding.ASCII.GetString(buffer, 0, n).Split('\n').Contains("WATCHDOG=1"))
            {
                return;
            }
        }
    }

    [Fact]
    public async Task Health_LoopStuckInOneTurn_IsWedged_AndTheStoreAloneIsNot()
    {
        // The service's own lifetime, started; the loop's stall given as its transport reports it.
        using var host = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(new()).Build();
        await host.StartAsync(TestContext.Current.CancellationToken);
        var lifetime = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>(host.Services);
        long stalled = 0;
        var serving = new TaskCompletionSource();
        var health = new Monitoring.HealthCheck(lifetime, () => serving.Task, () => stalled);
        Assert.Null(health.Wedged());
        stalled = 9_999;
        Assert.Null(health.Wedged());
        stalled = 12_345;
        Assert.Equal("policy loop stuck for 12 s", health.Wedged());
        Assert.Equal("policy loop stuck for 12 s", health.Problem());
        stalled = 0;
        serving.SetResult();
        Assert.Equal("policy listeners stopped", health.Wedged());
        await host.StopAsync(TestContext.Current.CancellationToken);
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/metricsx")]
    [InlineData("/health/x")]
    public async Task OtherPaths_Are404(string path)
    {
        var (server, _, metricsPort) = await StartAsync();
        await using var _ = server;
        Assert.Equal(HttpStatusCode.NotFound, (await GetAsync(metricsPort, path)).Status);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(metricsPort, "/metrics?x=1")).Status);
    }

    [Fact]
    public async Task MetricsPortInUse_StopsTheStartWithExit1()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        int port = ((IPEndPoint)taken.LocalEndPoint!).Port;
        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort(), port));
        Assert.Equal(1, code);
        Assert.Contains($"ERROR: --metrics: can't listen on 127.0.0.1:{port}: Address already in use", output.Split('\n'));
        Assert.DoesNotContain("listening on", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--metrics=abc", "ERROR: --metrics=abc: invalid port 'abc'")]
    [InlineData("--metrics=::1:9100", "ERROR: --metrics=::1:9100: write an IPv6 address in brackets, e.g. [::1]:10023")]
    public async Task BadMetricsAddress_IsAnErrorAtStart(string flag, string error)
    {
        var (code, output) = await PostgreyProcess.RunAsync("--inet=10023", flag);
        Assert.Equal(1, code);
        Assert.Contains(error, output.Split('\n'));
    }

    [Fact]
    public async Task DryRun_AnswersDunnoAndRecords_TheTripletThenPassesWhenEnforced()
    {
        var (dry, policyPort, metricsPort) = await StartAsync("--dry-run");
        await using (dry)
        {
            Assert.Equal("DUNNO", await AskAsync(policyPort, Requests.Policy(testTime: T0)));
            Assert.Equal("DUNNO", await AskAsync(policyPort, Requests.Policy(testTime: T0 + 60)));
            await dry.WaitForLineAsync(l => l == "action=greylist, reason=new, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org, dry_run=yes");
            await dry.WaitForLineAsync(l => l == "action=greylist, reason=early-retry (240s missing), client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org, dry_run=yes");
            string metrics = (await GetAsync(metricsPort, "/metrics")).Body;
            Assert.Contains("postgrey_decisions_total{action=\"greylist\",reason=\"new\"} 1\n", metrics, StringComparison.Ordinal);
            Assert.Contains("postgrey_decisions_total{action=\"greylist\",reason=\"early-retry\"} 1\n", metrics, StringComparison.Ordinal);
        }

        // Enforced, on the database the dry run filled: the sender retried past the delay and passes.
        var (enforced, port, _) = await StartAsync();
        await using (enforced)
        {
            Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", await AskAsync(port, Requests.Policy(testTime: T0 + 400, instance: "i2")), StringComparison.Ordinal);
            Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(port, Requests.Policy(recipient: "new@example.org", testTime: T0 + 400)), StringComparison.Ordinal);
            await enforced.WaitForLineAsync(l => l == "action=pass, reason=triplet found, delay=400, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org");
            Assert.DoesNotContain(enforced.Lines, l => l.Contains("dry_run", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task AlertExamples_PassPromtool()
    {
        Requires.Program(Promtool, "prometheus");
        var (code, output) = await RunAsync(Promtool, "check", "rules", Path.Combine(RepoRoot(), "packaging", "prometheus", "postgrey-alerts.yml"));
        Assert.True(code == 0, output);
        Assert.Contains("SUCCESS: 7 rules found", output, StringComparison.Ordinal);
    }

    /// <summary>Every metric the service writes is in docs/monitoring.md, and every one the
    /// dashboard and the alerts query is one of those.</summary>
    [Fact]
    public async Task DocsDashboardAndAlerts_NameTheMetricsTheServiceWrites()
    {
        var (server, policyPort, metricsPort) = await StartAsync();
        await using var _ = server;
        await AskAsync(policyPort, Requests.Policy(testTime: T0));
        string exposition = (await GetAsync(metricsPort, "/metrics")).Body;
        string docs = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "monitoring.md"));
        var written = MetricName().Matches(exposition).Select(m => m.Groups[1].Value).Where(n => !n.EndsWith("_bucket", StringComparison.Ordinal)).ToHashSet();
        Assert.Contains("postgrey_decisions_total", written);
        foreach (string name in written.Select(Base))
        {
            Assert.Contains($"`{name}", docs, StringComparison.Ordinal);
        }
        string queries = File.ReadAllText(Path.Combine(RepoRoot(), "packaging", "grafana", "postgrey.json"))
            + File.ReadAllText(Path.Combine(RepoRoot(), "packaging", "prometheus", "postgrey-alerts.yml"));
        var queried = QueriedName().Matches(queries).Select(m => Base(m.Value)).ToHashSet();
        Assert.True(queried.Count >= 15, $"only {queried.Count} metrics queried");
        foreach (string name in queried)
        {
            Assert.Contains($"`{name}", docs, StringComparison.Ordinal);
        }

        static string Base(string name) => System.Text.RegularExpressions.Regex.Replace(name, "_(bucket|sum|count)$", "");
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^# TYPE (\S+) ", System.Text.RegularExpressions.RegexOptions.Multiline)]
    private static partial System.Text.RegularExpressions.Regex MetricName();

    [System.Text.RegularExpressions.GeneratedRegex(@"\b(postgrey|process|dotnet)_[a-z_]+[a-z]")]
    private static partial System.Text.RegularExpressions.Regex QueriedName();

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir!.FullName, "Postgrey.sln")))
        {
            dir = dir.Parent;
        }
        return dir.FullName;
    }

    private static async Task<(int Code, string Output)> RunAsync(string program, params string[] args)
    {
        var info = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info)!;
        string output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, output);
    }

    private async Task<PrometheusServer> StartPrometheusAsync(int metricsPort)
    {
        int port = PolicyServerProcess.FreePort();
        string config = _dir.Write("prometheus.yml", $"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: postgrey
                scrape_interval: 1s
                static_configs:
                  - targets: ['127.0.0.1:{metricsPort}']
            """);
        var process = PolicyServerProcess.Start(Prometheus,
        [
            $"--config.file={config}",
            $"--storage.tsdb.path={_dir.File("prometheus-data")}",
            $"--web.listen-address=127.0.0.1:{port}",
        ]);
        var server = new PrometheusServer(process, port, _http);
        await process.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(60));
        return server;
    }

    private sealed class PrometheusServer(PolicyServerProcess process, int port, HttpClient http) : IAsyncDisposable
    {
        /// <summary>Queries Prometheus until <paramref name="query"/> gives <paramref name="expected"/>.</summary>
        public async Task WaitForValueAsync(string query, double expected)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            string last = "";
            while (DateTime.UtcNow < deadline)
            {
                using HttpResponseMessage response = await http.GetAsync(new Uri($"http://127.0.0.1:{port}/api/v1/query?query={Uri.EscapeDataString(query)}"));
                last = await response.Content.ReadAsStringAsync();
                if (response.IsSuccessStatusCode)
                {
                    using var json = JsonDocument.Parse(last);
                    JsonElement result = json.RootElement.GetProperty("data").GetProperty("result");
                    if (result.GetArrayLength() == 1
                        && double.Parse(result[0].GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture) == expected)
                    {
                        return;
                    }
                }
                await Task.Delay(500);
            }
            Assert.Fail($"{query}: not {expected} within 60 s; last answer: {last}\n{string.Join('\n', process.Lines.TakeLast(20))}");
        }

        public ValueTask DisposeAsync() => process.DisposeAsync();
    }
}
