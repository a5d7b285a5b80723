using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Postgrey.Testing;

namespace Postgrey.Differential.Tests;

/// <summary>
/// Runs every scenario against the real postgrey 1.37 (policy_test_time) and ours
/// (--allow-test-time), one server pair per flag set, and requires the same action for every
/// request and the same decision log lines, except the deliberate differences, which are
/// asserted on their own. Dates in headers are normalised before comparing. Ours runs once on
/// SQLite (--dbdir) and once on PostgreSQL (--db=postgresql://..., a fresh database of a private
/// cluster; skipped without PostgreSQL, failed under CI).
/// </summary>
public sealed partial class DifferentialTests(ITestOutputHelper output, PostgresCluster cluster) : IClassFixture<PostgresCluster>
{
    private const string RealPostgrey = "/usr/sbin/postgrey";

    public static MatrixTheoryData<string, string> FlagSetsAndStores => new([.. Scenarios.FlagSets.Keys], ["sqlite", "postgresql"]);

    [Fact]
    public void Corpus_CoversEveryFlagSetWithEnoughScenarios()
    {
        Assert.True(Scenarios.All.Count >= 40, $"{Scenarios.All.Count} scenarios");
        Assert.All(Scenarios.FlagSets.Keys, set => Assert.Contains(Scenarios.All, s => s.FlagSet == set));
        Assert.Equal(Scenarios.All.Count, Scenarios.All.Select(s => s.Name).Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(FlagSetsAndStores))]
    public async Task SameAnswersAsPostgrey(string flagSet, string store)
    {
        Requires.Program(RealPostgrey, "postgrey");
        string[] ourStore = store == "postgresql" ? [$"--db={cluster.SocketUri(await cluster.CreateDatabaseAsync())}"] : [];
        using var dir = new TempDirectory();
        string clients = dir.Write("whitelist_clients", Scenarios.ClientWhitelist);
        string recipients = dir.Write("whitelist_recipients", Scenarios.RecipientWhitelist);
        string[] common = ["--hostname=mx.test", $"--whitelist-clients={clients}", $"--whitelist-recipients={recipients}", .. Scenarios.FlagSets[flagSet]];

        int theirPort = PolicyServerProcess.FreePort();
        string theirDb = Directory.CreateDirectory(dir.File("theirs")).FullName;
        await using var theirs = PolicyServerProcess.Start(RealPostgrey, [$"--inet=127.0.0.1:{theirPort}", $"--dbdir={theirDb}", .. RunAs(theirDb), .. common], stopGracefully: false);
        int ourPort = PolicyServerProcess.FreePort();
        await using var ours = BuiltPostgrey.Start([$"--inet=127.0.0.1:{ourPort}", $"--dbdir={dir.File("ours")}", "--allow-test-time", .. ourStore, .. common]);
        var theirEndPoint = new IPEndPoint(IPAddress.Loopback, theirPort);
        var ourEndPoint = new IPEndPoint(IPAddress.Loopback, ourPort);
        await theirs.WaitUntilListeningAsync(theirEndPoint, TimeSpan.FromSeconds(30));
        await ours.WaitUntilListeningAsync(ourEndPoint, TimeSpan.FromSeconds(30));

        var mismatches = new List<string>();
        int steps = 0;
        foreach (var (scenario, number) in Scenarios.All.Select((s, i) => (s, i + 1)).Where(x => x.s.FlagSet == flagSet))
        {
            Step[] requests = scenario.Build(new ScenarioContext(number));
            var ourAnswers = await RunAsync(ourEndPoint, requests, scenario.ConnectionPerRequest, TimeSpan.FromSeconds(10));
            var theirAnswers = await RunAsync(theirEndPoint, requests, scenario.ConnectionPerRequest, TimeSpan.FromSeconds(2));
            steps += requests.Length;
            for (int i = 0; i < requests.Length; i++)
            {
                output.WriteLine($"{scenario.Name} #{i + 1}: ours [{ourAnswers[i]}] postgrey [{theirAnswers[i]}]");
            }
            if (scenario.Deliberate is { } check)
            {
                check(ourAnswers, theirAnswers);
                continue;
            }
            for (int i = 0; i < requests.Length; i++)
            {
                if (ourAnswers[i] != theirAnswers[i])
                {
                    mismatches.Add($"{scenario.Name}, request {i + 1}: ours [{ourAnswers[i]}], postgrey [{theirAnswers[i]}]");
                }
            }
        }

        await Task.Delay(200); // let both flush their last log lines
        if (!flagSet.StartsWith("diff", StringComparison.Ordinal))
        {
            var ourLog = DecisionLines(ours.Lines);
            var theirLog = DecisionLines(theirs.Lines);
            for (int i = 0; i < Math.Max(ourLog.Count, theirLog.Count); i++)
            {
                string a = i < ourLog.Count ? ourLog[i] : "<none>";
                string b = i < theirLog.Count ? theirLog[i] : "<none>";
                if (a != b)
                {
                    mismatches.Add($"log line {i + 1}: ours [{a}], postgrey [{b}]");
                }
            }
            output.WriteLine($"{flagSet} ({store}): {steps} requests, {ourLog.Count} decision log lines compared");
        }
        Assert.True(mismatches.Count == 0, string.Join('\n', mismatches));
    }

    // postgrey drops privileges to --user when root; its dbdir must then belong to that user.
    private static string[] RunAs(string dbdir)
    {
        if (Environment.UserName != "root")
        {
            return [$"--user={Environment.UserName}", $"--group={Environment.UserName}"];
        }
        using var chown = System.Diagnostics.Process.Start("chown", ["postgrey:postgrey", dbdir]);
        chown.WaitForExit();
        Assert.Equal(0, chown.ExitCode);
        return [];
    }

    private static async Task<IReadOnlyList<string>> RunAsync(EndPoint endPoint, Step[] steps, bool connectionPerRequest, TimeSpan timeout)
    {
        var answers = new List<string>();
        PolicyClient? client = null;
        try
        {
            foreach (Step step in steps)
            {
                if (client is null)
                {
                    try
                    {
                        client = await PolicyClient.ConnectAsync(endPoint);
                    }
                    catch (SocketException)
                    {
                        answers.Add(Scenarios.Closed);
                        continue;
                    }
                }
                string answer;
                try
                {
                    await client.SendAsync(step.ToWire());
                    answer = Normalise(await client.ReadActionAsync(timeout)) ?? Scenarios.Closed;
                }
                catch (TimeoutException)
                {
                    answer = Scenarios.NoAnswer;
                }
                catch (IOException)
                {
                    answer = Scenarios.Closed;
                }
                answers.Add(answer);
                if (connectionPerRequest || answer is Scenarios.NoAnswer or Scenarios.Closed)
                {
                    if (connectionPerRequest && answer is not (Scenarios.NoAnswer or Scenarios.Closed))
                    {
                        // --exim: the server closes after its answer.
                        Assert.Null(await client.ReadActionAsync(timeout));
                    }
                    await client.DisposeAsync();
                    client = null;
                }
            }
        }
        finally
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }
        }
        return answers;
    }

    private static string? Normalise(string? action) => action is null ? null : HeaderDate().Replace(action, "<date>");

    private static List<string> DecisionLines(IEnumerable<string> lines) =>
        lines.Where(l => DecisionLine().IsMatch(l)).ToList();

    [GeneratedRegex(@"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [A-Z+\-0-9]+")]
    private static partial Regex HeaderDate();

    [GeneratedRegex(@"^(?:[0-9A-Za-z]+: )?action=|^whitelisted: |^correcting date")]
    private static partial Regex DecisionLine();
}
