using System.Text.Json;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary><c>postgrey stats</c> on a database of known content, run as the built program.</summary>
public sealed class StatsCommandTests : IDisposable
{
    private const long Hour = 3600;
    private const long Day = 86400;
    private readonly TempDirectory _dir = new();
    private readonly long _now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public StatsCommandTests()
    {
        long n = _now;
        TripletRow[] triplets =
        [
            // Passed: after 600, 300 and 1200 s; and one seen again 3 days on (its delay unknown).
            new("192.0.2/a@good.example/r@d.example", n - (3 * Day), n - (3 * Day) + 600),
            new("192.0.2/b@good.example/r@d.example", n - (2 * Day) + Hour, n - (2 * Day) + Hour + 300),
            new("192.0.2/c@good.example/r@d.example", n - Day, n - Day + 1200),
            new("192.0.2/d@good.example/r@d.example", n - (4 * Day), n - Day),
            // Waiting: greylisted an hour ago.
            new("192.0.2/e@good.example/r@d.example", n - Hour, n - Hour),
            // Never retried within the 2-day window (one retried too early only).
            new("198.51.100/x@spam.example/r1@d.example", n - (5 * Day), n - (5 * Day)),
            new("198.51.100/y@spam.example/r2@d.example", n - (3 * Day), n - (3 * Day) + 10),
            new("203.0.113/z@other.example/r@d.example", n - (6 * Day), n - (6 * Day)),
            new("192.0.2.9/32//r@d.example", n - (4 * Day), n - (4 * Day)), // --lookup-by-host, a bounce
            // Before --since (7 days).
            new("203.0.113/old@other.example/r@d.example", n - (10 * Day), n - (10 * Day)),
        ];
        ClientRow[] clients = [new("192.0.2.1", 5, n), new("192.0.2.2", 7, n), new("192.0.2.3", 2, n)];
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = _dir.Path }, triplets, clients, replace: false);
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>The tool as the admin runs it (not through BuiltPostgrey.Start, which adds the service's --user).</summary>
    private static async Task<(int ExitCode, string Output)> RunAsync(params string[] args)
    {
        await using var process = PolicyServerProcess.Start("dotnet", [BuiltPostgrey.DllPath, .. args]);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, string.Join('\n', process.Lines));
    }

    [Fact]
    public async Task Json_GivesTheFiguresOfTheDatabase()
    {
        var (code, output) = await RunAsync("stats", $"--dbdir={_dir.Path}", "--json");
        Assert.Equal(0, code);
        using var json = JsonDocument.Parse(output);
        JsonElement root = json.RootElement;
        Assert.Equal(9, root.GetProperty("triplets").GetInt64());
        Assert.Equal(4, root.GetProperty("passed").GetInt64());
        Assert.Equal(1, root.GetProperty("waiting").GetInt64());
        Assert.Equal(4, root.GetProperty("never_retried").GetInt64());
        JsonElement delay = root.GetProperty("retry_delay_seconds");
        Assert.Equal(600, delay.GetProperty("median").GetInt64());
        Assert.Equal(1200, delay.GetProperty("p90").GetInt64());
        Assert.Equal(3, delay.GetProperty("triplets").GetInt64());
        Assert.Equal(3, root.GetProperty("clients").GetInt64());
        Assert.Equal(2, root.GetProperty("auto_whitelisted_clients").GetInt64());
        Assert.Equal(
            ["spam.example=2", "<>=1", "other.example=1"],
            root.GetProperty("top_sender_domains_never_retried").EnumerateArray().Select(e => $"{e.GetProperty("domain").GetString()}={e.GetProperty("count").GetInt64()}"));
        Assert.Equal(
            ["198.51.100=2", "192.0.2.9/32=1", "203.0.113=1"],
            root.GetProperty("top_client_networks_never_retried").EnumerateArray().Select(e => $"{e.GetProperty("network").GetString()}={e.GetProperty("count").GetInt64()}"));
    }

    [Fact]
    public async Task Text_WithSince_CountsOnlyTheTripletsFirstSeenSince()
    {
        var (code, output) = await RunAsync("stats", $"--dbdir={_dir.Path}", "--since=36h");
        Assert.Equal(0, code);
        string[] lines = output.Split('\n');
        Assert.Matches(@"^triplets first seen since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: 2$", lines[0]);
        Assert.Equal(
            [
                "  passed:        1",
                "  waiting:       1 (greylisted, still within the retry window)",
                "  never retried: 0 (greylisted, no retry within the retry window)",
                "retry delay: median 1200 s, p90 1200 s (1 triplets)",
                "auto-whitelisted clients: 2 (of 3 counted)",
                "sender domains greylisted without retry:",
                "client networks greylisted without retry:",
            ],
            lines[1..8]);
    }

    [Theory]
    [InlineData("--since=x", "postgrey stats: --since=x: a positive whole number with an optional unit d, h, m or s is expected (see postgrey stats --help)")]
    [InlineData("--since=0", "postgrey stats: --since=0: a positive whole number with an optional unit d, h, m or s is expected (see postgrey stats --help)")]
    public async Task BadUsage_Exits2WithOneLine(string flag, string error)
    {
        var (code, output) = await RunAsync("stats", $"--dbdir={_dir.Path}", flag);
        Assert.Equal(2, code);
        Assert.Equal(error, output.Trim());
    }

    [Fact]
    public async Task NoDatabase_Exits1WithOneLine()
    {
        string missing = _dir.File("none");
        var (code, output) = await RunAsync("stats", $"--dbdir={missing}");
        Assert.Equal(1, code);
        Assert.Equal($"postgrey stats: ERROR: can't read {missing}/postgrey.sqlite3: no database at {missing}/postgrey.sqlite3", output.Trim());
    }
}
