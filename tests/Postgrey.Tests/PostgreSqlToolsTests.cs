using System.Net;
using System.Text.RegularExpressions;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>
/// <c>postgrey stats</c>, <c>list</c> and <c>explain</c> on the shared PostgreSQL store (--db), run as
/// the built program against a private cluster: for the same rows, written through the real
/// stores (db copy from SQLite, or decisions of a running service on each), they print exactly
/// what they print on SQLite.
/// </summary>
public sealed partial class PostgreSqlToolsTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private const long Hour = 3600;
    private const long Day = 86400;
    private const long T0 = 1_700_000_000;
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A SQLite dbdir of varied rows, dated from now, copied into a new PostgreSQL database by <c>postgrey db copy</c>.</summary>
    private async Task<(string DbDir, string Uri)> CopiedAsync()
    {
        long n = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        TripletRow[] triplets =
        [
            new("192.0.2.0/a@good.example/r@d.example", n - (3 * Day), n - (3 * Day) + 600),
            new("192.0.2.0/b@good.example/r@d.example", n - (2 * Day) + Hour, n - (2 * Day) + Hour + 300),
            new("192.0.2.0/c@good.example/r@d.example", n - Day, n - Day + 1200),
            new("192.0.2.0/d@good.example/r@d.example", n - (4 * Day), n - Day),
            new("192.0.2.0/e@good.example/r@d.example", n - Hour, n - Hour),
            new("198.51.100.0/x@spam.example/r1@d.example", n - (5 * Day), n - (5 * Day)),
            new("198.51.100.0/y@spam.example/r2@d.example", n - (3 * Day), n - (3 * Day) + 10),
            new("203.0.113.0/z@other.example/r@d.example", n - (6 * Day), n - (6 * Day)),
            new("192.0.2.9/32//r@d.example", n - (4 * Day), n - (4 * Day)), // --lookup-by-host, a bounce
            new("2001:db8:0:0:0:0:0:0/f@example.com/b@example.org", n - (3 * Day), n - (3 * Day)),
            new("203.0.113.0/old@other.example/r@d.example", n - (10 * Day), n - (10 * Day)),
            // Keys outside ASCII and upper case: both stores must sort them by bytes alike.
            new("192.0.2.0/m\u00fcller@b\u00fccher.example/r@d.example", n - (2 * Day), n - (2 * Day)),
            new("192.0.2.0/Zed@good.example/r@d.example", n - (3 * Day), n - (3 * Day)),
            new("0123456789abcdef0123456789abcdef01234567", n - (3 * Day), n - (3 * Day)), // --privacy
        ];
        ClientRow[] clients = [new("192.0.2.1", 5, n - Day), new("192.0.2.2", 7, n), new("192.0.2.3", 2, n), new("2001:DB8:0:0:0:0:0:5", 9, n - Hour)];
        string dbdir = _dir.File("sqlite");
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = dbdir }, triplets, clients, replace: false);
        string uri = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        var (exit, _, stderr) = Run("db", "copy", $"--from-dbdir={dbdir}", $"--to-db={uri}");
        Assert.True(exit == 0, stderr);
        return (dbdir, uri);
    }

    [Fact]
    public async Task Stats_SameOutputOnBothStores_TextAndJson_WithSince()
    {
        var (dbdir, uri) = await CopiedAsync();
        string[][] flagSets =
        [
            [],
            ["--json"],
            ["--since=36h"],
            ["--since=36h", "--json"],
            ["--since=30d", "--top=2", "--auto-whitelist-clients=6"],
            ["--since=7d", "--json", "--delay=60", "--retry-window=12h", "--auto-whitelist-clients=0"],
        ];
        foreach (string[] flags in flagSets)
        {
            string output = await SameOnBothAsync(["stats", .. flags], dbdir, uri);
            Assert.Contains(flags.Contains("--json") ? "\"triplets\": " : "triplets first seen since", output, StringComparison.Ordinal);
        }
        // The figures themselves, to be sure both did not print the same nothing.
        string text = await SameOnBothAsync(["stats", "--since=30d"], dbdir, uri);
        Assert.Matches(@"^triplets first seen since [^\n]+: 14\n  passed:        4\n", text);
        Assert.Contains("auto-whitelisted clients: 3 (of 4 counted)\n", text, StringComparison.Ordinal);
        Assert.Contains("         2  spam.example\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task List_SameOutputOnBothStores_EveryFilter()
    {
        var (dbdir, uri) = await CopiedAsync();
        string[][] argSets =
        [
            ["list"],
            ["list", "--client=192.0.2.77"],
            ["list", "--client=192.0.2.9"],
            ["list", "--client=198.51.100.0/24"],
            ["list", "--client=2001:db8::1"],
            ["list", "--client=203.*"],
            ["list", "--sender=*@good.example"],
            ["list", "--sender=M\u00fcller@B\u00fccher.example"],
            ["list", "--recipient=r1@d.example"],
            ["list", "--recipient=*@EXAMPLE.org", "--sender=*"],
            ["list", "clients"],
            ["list", "clients", "--min-count=6"],
            ["list", "clients", "--client=2001:db8::5"],
            ["list", "clients", "--client=192.0.2.0/30"],
        ];
        foreach (string[] args in argSets)
        {
            foreach (string[] format in new[] { Array.Empty<string>(), ["--json"] })
            {
                string output = await SameOnBothAsync([.. args, .. format], dbdir, uri);
                Assert.True(output.Split('\n').Length > (format.Length == 0 ? 2 : 3), $"{string.Join(' ', args)}: nothing listed:\n{output}");
            }
        }
        // Every row, in the same byte order: upper case before lower, UTF-8 after ASCII.
        string all = await SameOnBothAsync(["list"], dbdir, uri);
        string[] keys = [.. all.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(l => l[44..])];
        Assert.Equal(14, keys.Length);
        Assert.Equal(keys.Order(StringComparer.Ordinal), keys);
        Assert.True(Array.IndexOf(keys, "192.0.2.0/Zed@good.example/r@d.example") < Array.IndexOf(keys, "192.0.2.0/a@good.example/r@d.example"));
        Assert.Contains("192.0.2.0/m\u00fcller@b\u00fccher.example/r@d.example", keys);
    }

    /// <summary>The same decisions, made by a running service on each store, then listed and
    /// explained: the service's rows read back the same, and explain decides the same.</summary>
    [Fact]
    public async Task ListAndExplain_AfterTheSameDecisions_ThroughRunningServices_SameOutput()
    {
        string uri = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        string dbdir = _dir.File("service-sqlite");
        (string Address, string Sender, string Recipient, long Time)[] deliveries =
        [
            ("192.0.2.7", "a+x@example.net", "b@example.org", T0),
            ("192.0.2.7", "a+x@example.net", "b@example.org", T0 + 400), // passes: auto-whitelist count 1
            ("192.0.2.99", "c@example.net", "d@example.com", T0),
            ("203.0.113.5", "a@example.net", "e@example.org", T0),
            ("2001:db8::5", "f@example.com", "b@example.org", T0),
            ("198.51.100.1", "", "postmaster@example.org", T0 + 10),
        ];
        string[] decisionFlags = ["--auto-whitelist-clients=1", "--delay=300", .. Whitelists()];
        foreach (string[] store in new[] { new[] { $"--dbdir={dbdir}" }, [$"--dbdir={_dir.File("lock")}", $"--db={uri}"] })
        {
            await using var service = PostgreyProcess.Start(["--inet=127.0.0.1:0", "--allow-test-time", .. decisionFlags, .. store]);
            IPEndPoint endPoint = await service.WaitForTcpAsync();
            await using var client = await PolicyClient.ConnectAsync(endPoint);
            int i = 0;
            foreach (var d in deliveries)
            {
                Assert.NotNull(await client.AskAsync(Requests.Policy(d.Address, "unknown", d.Sender, d.Recipient, instance: $"i{i++}", testTime: d.Time)));
            }
        }

        foreach (string[] args in new[] { ["list"], ["list", "--json"], ["list", "--client=192.0.2.1"], ["list", "clients"], new[] { "list", "clients", "--json" } })
        {
            string output = await SameOnBothAsync(args, dbdir, uri);
            Assert.Contains(args.Contains("clients") ? "192.0.2.7" : "192.0.2.0/a@example.net/b@example.org", output, StringComparison.Ordinal);
        }

        foreach (var (address, sender, recipient, time) in new[] { ("192.0.2.7", "a@example.net", "b@example.org", T0 + 500), ("192.0.2.8", "new@example.net", "b@example.org", T0 + 500), ("203.0.113.5", "a@example.net", "e@example.org", T0 + 100) })
        {
            string[] explain = ["explain", $"--client-address={address}", $"--sender={sender}", $"--recipient={recipient}", $"--time={time}", .. decisionFlags];
            var (exitLite, lite, errLite) = Run([.. explain, $"--dbdir={dbdir}"]);
            var (exitPg, pg, errPg) = Run([.. explain, $"--dbdir={dbdir}", $"--db={uri}"]);
            Assert.True(exitLite == 0, errLite);
            Assert.True(exitPg == 0, errPg);
            // All but the line naming the database.
            Assert.Equal(lite.Replace(Path.Combine(dbdir, "postgrey.sqlite3"), "DB", StringComparison.Ordinal), pg.Replace(uri, "DB", StringComparison.Ordinal));
            Assert.Contains("database: DB\n", pg.Replace(uri, "DB", StringComparison.Ordinal), StringComparison.Ordinal);
        }
    }

    /// <summary>The snapshot sees the rows as they were when it began, and the service's writes
    /// (an update of a row it has read, an insert) go through meanwhile, without waiting.</summary>
    [Fact]
    public async Task Snapshot_IsConsistent_AndBlocksNoWrites()
    {
        var (_, uri) = await CopiedAsync();
        string database = uri[(uri.LastIndexOf('/') + 1)..];
        string connectionString = PostgreSqlConnectionString.Parse(uri, out string error)?.ConnectionString ?? throw new InvalidOperationException(error);
        using var snapshot = PostgreSqlSnapshot.Open(connectionString);
        var before = snapshot.FindTriplet("192.0.2.0/a@good.example/r@d.example");
        Assert.NotNull(before);

        // lock_timeout: a write that had to wait for the snapshot fails instead of hanging the test.
        await cluster.PsqlAsync(
            "SET lock_timeout = '5s'; UPDATE triplets SET last_seen = last_seen + 1 WHERE key = '192.0.2.0/a@good.example/r@d.example'; " +
            "INSERT INTO triplets (key, first_seen, last_seen) VALUES ('192.0.2.0/new@x.example/r@d.example', 1, 1); DELETE FROM clients WHERE key = '192.0.2.3'",
            database);

        Assert.Equal(before, snapshot.FindTriplet("192.0.2.0/a@good.example/r@d.example"));
        Assert.Null(snapshot.FindTriplet("192.0.2.0/new@x.example/r@d.example"));
        Assert.Equal(14, snapshot.Triplets().Count());
        Assert.Equal(4, snapshot.Clients().Count());
        Assert.Equal(before.Value.LastSeen + 1, await cluster.ScalarAsync("SELECT last_seen FROM triplets WHERE key = '192.0.2.0/a@good.example/r@d.example'", database));
    }

    [Fact]
    public async Task Failures_OneLine()
    {
        await cluster.StartAsync();
        string missing = cluster.SocketUri("no_such_db");
        string empty = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        string refused = $"postgresql://postgrey@127.0.0.1:{PolicyServerProcess.FreePort()}/postgrey";
        foreach (string tool in new[] { "list", "stats" })
        {
            var (exit, stdout, stderr) = Run(tool, $"--db={missing}");
            Assert.Equal(1, exit);
            Assert.Equal("", stdout);
            Assert.Equal($"postgrey {tool}: ERROR: can't read database {missing}: database \"no_such_db\" does not exist (SQLSTATE 3D000)\n", stderr);

            (exit, stdout, stderr) = Run(tool, $"--db={empty}");
            Assert.Equal(1, exit);
            Assert.Equal($"postgrey {tool}: ERROR: can't read database {empty}: no postgrey schema there (no table schema_version)\n", stderr);

            (exit, stdout, stderr) = Run(tool, $"--db={refused}");
            Assert.Equal(1, exit);
            Assert.Equal("", stdout);
            Assert.Matches($@"^postgrey {tool}: ERROR: can't read database {Regex.Escape(refused)}: [^\n]*(refused|Connection)[^\n]*\n$", stderr);

            (exit, stdout, stderr) = Run(tool, "--db=mysql://x@y/z");
            Assert.Equal(2, exit);
            Assert.Equal("", stdout);
            Assert.Matches($@"^postgrey {tool}: --db: [^\n]+ \(see postgrey {tool} --help\)\n$", stderr);

            (exit, _, stderr) = Run(tool, "--dbdir=/tmp/x", $"--db={empty}");
            Assert.Equal(2, exit);
            Assert.Equal($"postgrey {tool}: --dbdir and --db: give one of them (see postgrey {tool} --help)\n", stderr);

            (exit, _, stderr) = Run(tool, $"--db-password-file={_dir.Write("pw", "x\n")}");
            Assert.Equal(2, exit);
            Assert.Equal($"postgrey {tool}: --db-password-file needs --db=postgresql:// (see postgrey {tool} --help)\n", stderr);
        }
        var (explainExit, _, explainErr) = Run(["explain", "--client-address=192.0.2.1", "--recipient=b@example.org", $"--dbdir={_dir.File("lock")}", $"--db={missing}", .. Whitelists()]);
        Assert.Equal(1, explainExit);
        Assert.Equal($"postgrey explain: ERROR: can't read database {missing}: database \"no_such_db\" does not exist (SQLSTATE 3D000)\n", explainErr);
    }

    /// <summary>Whitelist files of the test's own, so that explain reads no file of the machine's.</summary>
    private string[] Whitelists() =>
        [$"--whitelist-clients={_dir.Write("clients", "mx.trusted.example\n")}", $"--whitelist-recipients={_dir.Write("recipients", "postmaster@\n")}"];

    /// <summary>Runs the tool on the SQLite dbdir and on the PostgreSQL copy; asserts that both
    /// succeed with identical output and returns it. stats prints the time it ran, to the second:
    /// both run at once, and runs that straddle a second are made again, whatever else differs
    /// then (a triplet greylisted exactly --retry-window ago, as the fixture's müller@ is when
    /// it runs in the second it was made, is "waiting" for one and "never retried" for the other).</summary>
    private static async Task<string> SameOnBothAsync(string[] args, string dbdir, string uri)
    {
        for (int attempt = 0; ; attempt++)
        {
            var onSqlite = Task.Run(() => Run([.. args, $"--dbdir={dbdir}"]));
            var onPostgreSql = Task.Run(() => Run([.. args, $"--db={uri}"]));
            var (exitLite, lite, errLite) = await onSqlite;
            var (exitPg, pg, errPg) = await onPostgreSql;
            Assert.True(exitLite == 0, $"{string.Join(' ', args)} --dbdir: {errLite}");
            Assert.True(exitPg == 0, $"{string.Join(' ', args)} --db: {errPg}");
            if (lite != pg && attempt < 9 && args[0] == "stats" && TimesOf(lite) != TimesOf(pg))
            {
                continue;
            }
            Assert.Equal(lite, pg);
            return pg;
        }

        static string TimesOf(string output) => string.Join(' ', Times().Matches(output).Select(m => m.Value));
    }

    [GeneratedRegex(@"(?<=since"":? )\d+|(?<=""now"": )\d+|(?<=since )\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")]
    private static partial Regex Times();

    private static (int ExitCode, string Stdout, string Stderr) Run(params string[] args) => BuiltPostgrey.Run(args);
}
