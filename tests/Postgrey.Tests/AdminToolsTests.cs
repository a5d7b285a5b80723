using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>
/// postgrey list, explain and check-whitelists, run as the built program on databases the real
/// service wrote and on real whitelist files (Debian's among them).
/// </summary>
public sealed class AdminToolsTests : IDisposable
{
    private const long T0 = 1_700_000_000;
    private readonly TempDirectory _dir = new();

    public AdminToolsTests()
    {
        _dir.Write("clients", "# a comment\n\nmx.trusted.example\n198.51.100.0/24\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    public void Dispose() => _dir.Dispose();

    private string DbDir => _dir.File("db");

    /// <summary>The flags that shape decisions, the same for the service and explain. No %d in
    /// the header: the service dates it by the real clock, not policy_test_time.</summary>
    private string[] DecisionFlags =>
    [
        $"--dbdir={DbDir}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        "--auto-whitelist-clients=1",
        "--hostname=mx.test",
        "--x-greylist-header=X-Greylist: delayed %t seconds by postgrey-%v at %h",
    ];

    private async Task<(PolicyServerProcess Service, IPEndPoint EndPoint)> StartServiceAsync()
    {
        var service = PostgreyProcess.Start(["--inet=127.0.0.1:0", "--allow-test-time", .. DecisionFlags]);
        return (service, await service.WaitForTcpAsync());
    }

    private static async Task<string?> AskAsync(IPEndPoint endPoint, Delivery d, string instance)
    {
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        return await client.AskAsync(Requests.Policy(d.Address, d.Name, d.Sender, d.Recipient, instance: instance, testTime: d.Time));
    }

    private string[] ExplainArgs(Delivery d) =>
    [
        "explain", $"--client-address={d.Address}", $"--client-name={d.Name}", $"--sender={d.Sender}", $"--recipient={d.Recipient}", $"--time={d.Time}",
        .. DecisionFlags,
    ];

    private sealed record Delivery(string Address, string Name, string Sender, string Recipient, long Time);

    [Fact]
    public async Task Explain_GivesTheAnswerTheServiceThenGives_ForEveryKindOfDecision()
    {
        Delivery first = new("192.0.2.7", "mx.sender.example", "a+list@example.net", "b@example.org", T0);
        Delivery[] steps =
        [
            first,                                                            // new
            first with { Time = T0 + 100 },                                   // early retry, 200 s missing
            first with { Time = T0 + 400 },                                   // passes, PREPEND
            first with { Time = T0 + 500 },                                   // client now auto-whitelisted
            new("203.0.113.9", "mx.trusted.example", "x@example.com", "y@example.org", T0),     // client whitelist, by name
            new("198.51.100.20", "unknown", "x@example.com", "y@example.org", T0),              // client whitelist, by network
            new("203.0.113.10", "unknown", "x@example.com", "postmaster@example.org", T0),      // recipient whitelist
        ];
        string[] reasons = ["reason=new", "reason=early-retry (200s missing)", "reason=triplet found, delay=400", "reason=client AWL",
            "reason=client whitelist", "reason=client whitelist", "reason=recipient whitelist"];

        var (service, endPoint) = await StartServiceAsync();
        await using (service)
        {
            for (int i = 0; i < steps.Length; i++)
            {
                // Asked beside the running service (read-only), then the service itself.
                var (exit, stdout, stderr) = Run(ExplainArgs(steps[i]));
                Assert.True(exit == 0, stderr);
                string answer = await AskAsync(endPoint, steps[i], $"i{i}") ?? "(none)";
                Assert.Equal("answer: " + answer, stdout.Split('\n')[0]);
                Assert.Contains("log: action=", stdout, StringComparison.Ordinal);
                Assert.Contains(reasons[i], stdout, StringComparison.Ordinal);
            }
        }

        // Why, in detail, for the last states.
        string early = Run(ExplainArgs(first with { Time = T0 + 100 })).Stdout;
        Assert.Contains("triplet key: 192.0.2.0/a@example.net/b@example.org", early, StringComparison.Ordinal);
        Assert.Contains("auto-whitelist: 1 passed triplet(s), 1 needed: whitelisted", early, StringComparison.Ordinal);
        string byName = Run(ExplainArgs(steps[4])).Stdout;
        Assert.Contains($"client whitelist: matched by {_dir.File("clients")} line 3: mx.trusted.example", byName, StringComparison.Ordinal);
        string byNetwork = Run(ExplainArgs(steps[5])).Stdout;
        Assert.Contains($"client whitelist: matched by {_dir.File("clients")} line 4: 198.51.100.0/24", byNetwork, StringComparison.Ordinal);
        string byRecipient = Run(ExplainArgs(steps[6])).Stdout;
        Assert.Contains($"recipient whitelist: matched by {_dir.File("recipients")} line 1: postmaster@", byRecipient, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Explain_EarlyRetry_SaysTimeLeftAndStoredTimes_AndWritesNothing()
    {
        Delivery d = new("192.0.2.7", "unknown", "a@example.net", "b@example.org", T0);
        var (service, endPoint) = await StartServiceAsync();
        await using (service)
        {
            Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(endPoint, d, "seed"), StringComparison.Ordinal);
        }
        string database = Path.Combine(DbDir, "postgrey.sqlite3");
        string[] before = Fingerprint();

        var (exit, stdout, stderr) = Run(ExplainArgs(d with { Time = T0 + 60 }));

        Assert.True(exit == 0, stderr);
        Assert.Equal(before, Fingerprint());
        Assert.Contains("triplet: first seen 2023-11-14T22:13:20Z, last seen 2023-11-14T22:13:20Z", stdout, StringComparison.Ordinal);
        Assert.Contains("time left: 240 s (--delay=300; a retry from 2023-11-14T22:18:20Z passes)", stdout, StringComparison.Ordinal);
        Assert.Contains("auto-whitelist: not listed: 0 passed triplets, 1 needed", stdout, StringComparison.Ordinal);
        Assert.Contains($"the service would write: triplet first_seen={T0} last_seen={T0 + 60} (explain writes nothing)", stdout, StringComparison.Ordinal);

        // And the service, started again on the same files, agrees.
        (service, endPoint) = await StartServiceAsync();
        await using (service)
        {
            Assert.Equal(stdout.Split('\n')[0], "answer: " + await AskAsync(endPoint, d with { Time = T0 + 60 }, "after"));
        }

        // Every file of the dbdir, with its bytes: the database, and no -wal or -shm left behind.
        string[] Fingerprint() =>
        [
            .. Directory.GetFiles(DbDir).Order(StringComparer.Ordinal)
                .Select(f => Path.GetFileName(f) + " " + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))),
        ];
        Assert.True(File.Exists(database));
    }

    /// <summary>The service's command line as /etc/default/postgrey may hold it: Getopt's
    /// single-dash long names, flags that change no decision, an empty value.</summary>
    [Fact]
    public void Explain_TakesTheServiceCommandLineAsGiven()
    {
        var (exit, stdout, stderr) = Run("explain", "-inet", "10023", "-delay=60", $"--pidfile={_dir.File("pid")}", "--max-connections=5",
            $"--dbdir={DbDir}", "--client-address=2001:db8::1", "--sender=", "--recipient=b@example.org", $"--time={T0}");
        Assert.True(exit == 0, stderr);
        Assert.Contains("time left: 60 s (--delay=60;", stdout, StringComparison.Ordinal);
        Assert.Contains("triplet key: 2001:db8:0:0:0:0:0:0//b@example.org", stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(_dir.File("pid")));
        Assert.False(Directory.Exists(DbDir)); // not even created
    }

    [Fact]
    public async Task List_FiltersTripletsAndClients_TextAndJson_BesideTheRunningService()
    {
        Delivery[] deliveries =
        [
            new("192.0.2.7", "unknown", "a+x@example.net", "b@example.org", T0),
            new("192.0.2.7", "unknown", "a+x@example.net", "b@example.org", T0 + 400), // passes: auto-whitelist count 1
            new("192.0.2.99", "unknown", "c@example.net", "d@example.com", T0),         // same /24
            new("203.0.113.5", "unknown", "a@example.net", "e@example.org", T0),
            new("2001:db8::5", "unknown", "f@example.com", "b@example.org", T0),
        ];
        var (service, endPoint) = await StartServiceAsync();
        await using (service)
        {
            int n = 0;
            foreach (Delivery d in deliveries)
            {
                await AskAsync(endPoint, d, $"i{n++}");
            }

            List<JsonElement> all = Json("list", "--json");
            Assert.Equal(4, all.Count);
            var first = all.Single(t => t.GetProperty("key").GetString() == "192.0.2.0/a@example.net/b@example.org");
            Assert.Equal("192.0.2.0", first.GetProperty("client").GetString());
            Assert.Equal("a@example.net", first.GetProperty("sender").GetString());
            Assert.Equal("b@example.org", first.GetProperty("recipient").GetString());
            Assert.Equal(T0, first.GetProperty("first_seen").GetInt64());
            Assert.Equal(T0 + 400, first.GetProperty("last_seen").GetInt64());

            Assert.Equal(["192.0.2.0/a@example.net/b@example.org", "192.0.2.0/c@example.net/d@example.com"], Keys("list", "--json", "--client=192.0.2.99"));
            Assert.Equal(["203.0.113.0/a@example.net/e@example.org"], Keys("list", "--json", "--client=203.0.113.0/24"));
            Assert.Equal(["2001:db8:0:0:0:0:0:0/f@example.com/b@example.org"], Keys("list", "--json", "--client=2001:db8::5"));
            Assert.Equal(["192.0.2.0/a@example.net/b@example.org"], Keys("list", "--json", "--sender=A+other@Example.net", "--recipient=b@example.org"));
            Assert.Equal(["192.0.2.0/a@example.net/b@example.org", "2001:db8:0:0:0:0:0:0/f@example.com/b@example.org", "203.0.113.0/a@example.net/e@example.org"], Keys("list", "--json", "--recipient=*@EXAMPLE.org", "--sender=*"));
            Assert.Equal(["2001:db8:0:0:0:0:0:0/f@example.com/b@example.org"], Keys("list", "--json", "--recipient=b@*", "--sender=*@example.com"));
            Assert.Empty(Keys("list", "--json", "--recipient=nobody@example.org"));

            var clients = Json("list", "clients", "--json");
            var client = Assert.Single(clients);
            Assert.Equal("192.0.2.7", client.GetProperty("key").GetString());
            Assert.Equal(1, client.GetProperty("count").GetInt64());
            Assert.Empty(Json("list", "clients", "--json", "--min-count=2"));
            Assert.Empty(Json("list", "clients", "--json", "--client=203.0.113.5"));

            var (exit, text, stderr) = Run("list", $"--dbdir={DbDir}", "--client=203.0.113.5");
            Assert.True(exit == 0, stderr);
            Assert.Equal("first_seen            last_seen             key\n2023-11-14T22:13:20Z  2023-11-14T22:13:20Z  203.0.113.0/a@example.net/e@example.org\n", text);
            (exit, text, stderr) = Run("list", "clients", $"--dbdir={DbDir}");
            Assert.True(exit == 0, stderr);
            Assert.Equal("count  last_seen             client\n    1  2023-11-14T22:20:00Z  192.0.2.7\n", text);
        }

        List<JsonElement> Json(params string[] args)
        {
            var (exit, stdout, stderr) = Run([.. args, $"--dbdir={DbDir}"]);
            Assert.True(exit == 0, stderr);
            return [.. JsonDocument.Parse(stdout).RootElement.EnumerateArray()];
        }

        List<string> Keys(params string[] args) => [.. Json(args).Select(t => t.GetProperty("key").GetString()!)];
    }

    [Fact]
    public void CheckWhitelists_DebiansOwnFiles_NoErrors()
    {
        Requires.Program("/etc/postgrey/whitelist_clients", "postgrey");
        var (exit, stdout, stderr) = Run("check-whitelists", "/etc/postgrey/whitelist_clients", "/etc/postgrey/whitelist_recipients");
        Assert.True(exit == 0, stdout + stderr);
        Assert.Matches(@"^\d{3} entries in 2 files: 0 errors, \d+ warnings\n$", stdout.Split('\n')[^2] + "\n");
        Assert.DoesNotContain(": error:", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckWhitelists_BadFiles_EveryProblemWithFileAndLine_ExitsOne()
    {
        string clients = _dir.Write("my_clients",
            """
            example.com
            not a hostname
            /foo(/
            192.0.2.0/40
            EXAMPLE.com
            mail.example.com
            192.0.2.0/24
            192.0.2.5
            /^(?=(a+)+$)b/
            ::ffff:192.0.2.0/120
            """ + "\n");
        string recipients = _dir.Write("my_recipients",
            """
            example.org
            sub.example.org
            user@example.org
            postmaster@
            postmaster@example.net
            /^(abuse/
            example.org
            """ + "\n");

        var (exit, stdout, stderr) = Run("check-whitelists", clients, recipients);

        Assert.True(exit == 1, stdout + stderr);
        string[] expected =
        [
            $"{clients}:2: error: not a hostname: doesn't look like a hostname",
            $"{clients}:3: error: /foo(/: invalid regular expression: ",
            $"{clients}:4: error: 192.0.2.0/40: invalid network prefix",
            $"{clients}:5: warning: EXAMPLE.com: duplicates {clients}:1",
            $"{clients}:6: warning: mail.example.com: already covered by example.com ({clients}:1)",
            $"{clients}:8: warning: 192.0.2.5: already covered by 192.0.2.0/24 ({clients}:7)",
            $"{clients}:9: warning: /^(?=(a+)+$)b/: regex needs the backtracking engine",
            $"{clients}:9: error: /^(?=(a+)+$)b/: the match times out on a 512-character name",
            $"{clients}:10: warning: ::ffff:192.0.2.0/120: duplicates {clients}:7",
            $"{recipients}:2: warning: sub.example.org: already covered by example.org ({recipients}:1)",
            $"{recipients}:3: warning: user@example.org: already covered by example.org ({recipients}:1)",
            $"{recipients}:5: warning: postmaster@example.net: already covered by postmaster@ ({recipients}:4)",
            $"{recipients}:6: error: /^(abuse/: invalid regular expression: ",
            $"{recipients}:7: warning: example.org: duplicates {recipients}:1",
        ];
        string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        foreach (string line in expected)
        {
            Assert.Contains(lines, l => l.StartsWith(line, StringComparison.Ordinal));
        }
        Assert.Equal(expected.Length + 1, lines.Length);
        Assert.Equal("17 entries in 2 files: 5 errors, 9 warnings", lines[^1]);
    }

    /// <summary>Without FILES, the files the service reads with the same flags: the way
    /// ExecReload or an admin checks the service's own configuration.</summary>
    [Fact]
    public void CheckWhitelists_ServiceFlags_ChecksTheServicesFiles()
    {
        string clients = _dir.Write("c", "example.com\nbad host\n");
        string recipients = _dir.Write("r", "/(/\n");

        var (exit, stdout, _) = Run("check-whitelists", "--inet=10023", "--delay=60", $"--whitelist-clients={clients}", $"--whitelist-recipients={recipients}");

        Assert.Equal(1, exit);
        Assert.Equal(
            [$"{clients}:2: error: bad host: doesn't look like a hostname", $"{recipients}:1: error: /(/: invalid regular expression: ", "3 entries in 2 files: 2 errors, 0 warnings"],
            stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Contains("invalid regular", StringComparison.Ordinal) ? l[..(l.IndexOf("expression: ", StringComparison.Ordinal) + 12)] : l));
    }

    [Fact]
    public void CheckWhitelists_UnreadableFile_ExitsOne_MissingLocalIsFine()
    {
        var (exit, stdout, _) = Run("check-whitelists", _dir.File("none"), _dir.File("clients"), _dir.File("none.local"));
        Assert.Equal(1, exit);
        Assert.StartsWith($"{_dir.File("none")}: error: can't open: ", stdout, StringComparison.Ordinal);
        Assert.EndsWith("2 entries in 3 files: 1 errors, 0 warnings\n", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("list", "--bogus")]
    [InlineData("list", "bogus")]
    [InlineData("list", "clients", "--sender=a@b")]
    [InlineData("list", "--min-count=2")]
    [InlineData("explain", "--recipient=b@example.org")]
    [InlineData("explain", "--client-address=nonsense", "--recipient=b@example.org")]
    [InlineData("explain", "--client-address=192.0.2.1", "--recipient=b@example.org", "--time=yesterday")]
    [InlineData("explain", "--client-address=192.0.2.1", "--recipient=b@example.org", "--delay=-1")]
    [InlineData("check-whitelists", "--bogus")]
    public void BadUsage_ExitsTwo_WithOneLine(params string[] args)
    {
        var (exit, stdout, stderr) = Run(args);
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Matches($@"^postgrey {args[0]}: [^\n]+ \(see postgrey {args[0]} --help\)\n$", stderr);
    }

    [Theory]
    [InlineData("list")]
    [InlineData("explain")]
    [InlineData("check-whitelists")]
    public void Help_ExitsZero(string command)
    {
        var (exit, stdout, _) = Run(command, "--help");
        Assert.Equal(0, exit);
        Assert.Contains("Usage:", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void ListAndExplain_BrokenDatabase_ExitOne_WithOneLine()
    {
        Directory.CreateDirectory(DbDir);
        File.WriteAllText(Path.Combine(DbDir, "postgrey.sqlite3"), "not a database, but long enough to be read as one by SQLite's header check............................................");
        foreach (string[] args in new[] { new[] { "list", $"--dbdir={DbDir}" }, ExplainArgs(new("192.0.2.1", "unknown", "", "b@example.org", T0)) })
        {
            var (exit, stdout, stderr) = Run(args);
            Assert.Equal(1, exit);
            Assert.Equal("", stdout);
            Assert.Matches($@"^postgrey {args[0]}: ERROR: can't read [^\n]+postgrey\.sqlite3: [^\n]+\n$", stderr);
        }
    }

    private static (int ExitCode, string Stdout, string Stderr) Run(params string[] args) => BuiltPostgrey.Run(args);
}
