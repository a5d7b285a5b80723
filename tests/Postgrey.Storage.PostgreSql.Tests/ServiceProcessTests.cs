using System.Net;
using Postgrey.Core.Storage;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// The built service, twice, on one database, as two MX hosts run it: <c>--db=postgresql://...</c>,
/// each with its own --dbdir and port, spoken to over real sockets. Time comes from
/// <c>policy_test_time</c> (--allow-test-time), so no test sleeps through --delay.
/// </summary>
public sealed class ServiceProcessTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IAsyncDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private const long T = 1_800_000_000;
    private readonly TempDirectory _dir = new();
    private readonly List<PolicyServerProcess> _processes = [];

    private async Task<(PolicyServerProcess Process, IPEndPoint EndPoint)> StartAsync(string db, string name, params string[] extra)
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
        int port = PolicyServerProcess.FreePort();
        var process = BuiltPostgrey.Start(
        [
            $"--inet=127.0.0.1:{port}",
            $"--dbdir={_dir.File(name)}",
            $"--db={db}",
            "--allow-test-time",
            "--delay=60",
            $"--whitelist-clients={_dir.File("clients")}",
            $"--whitelist-recipients={_dir.File("recipients")}",
            .. extra,
        ]);
        _processes.Add(process);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        await process.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(60));
        return (process, endPoint);
    }

    private static async Task<string?> AskAsync(IPEndPoint endPoint, string request)
    {
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        return await client.AskAsync(request);
    }

    [Fact]
    public async Task TwoServices_GreylistedViaA_PassesViaBAfterTheDelay()
    {
        string db = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        var (_, a) = await StartAsync(db, "a");
        var (_, b) = await StartAsync(db, "b");

        Assert.Equal(Greylisted, await AskAsync(a, Requests.Policy(testTime: T)));
        Assert.Equal(Greylisted, await AskAsync(b, Requests.Policy(testTime: T + 30)));
        string? passed = await AskAsync(b, Requests.Policy(testTime: T + 61));
        Assert.StartsWith("PREPEND X-Greylist: delayed 61 seconds", passed, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TwoServices_200ConcurrentFirstRequests_OneRowOneFirstSeen()
    {
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);
        var (_, a) = await StartAsync(db, "a");
        var (_, b) = await StartAsync(db, "b");

        // 200 connections at once, half to each host, their clocks a few seconds apart.
        string?[] answers = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            AskAsync(i % 2 == 0 ? a : b, Requests.Policy(testTime: T + (i % 5)))));
        Assert.All(answers, answer => Assert.Equal(Greylisted, answer));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", database));
        long first = await cluster.ScalarAsync("SELECT first_seen FROM triplets", database);
        Assert.InRange(first, T, T + 4);
        // Both hosts agree on that first-seen: the delay counts from it on either.
        Assert.StartsWith("PREPEND", await AskAsync(a, Requests.Policy(testTime: first + 60)), StringComparison.Ordinal);
        Assert.Equal(1, await cluster.ScalarAsync($"SELECT count(*) FROM triplets WHERE first_seen = {first}", database));
    }

    [Fact]
    public async Task TwoServices_AutoWhitelistCountedOnBoth_ReachesItsThreshold()
    {
        string db = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        var (_, a) = await StartAsync(db, "a", "--auto-whitelist-clients=2");
        var (processB, b) = await StartAsync(db, "b", "--auto-whitelist-clients=2");

        // Triplet 1: greylisted via A, passes via B (the client's first pass).
        Assert.Equal(Greylisted, await AskAsync(a, Requests.Policy(sender: "one@example.net", testTime: T)));
        Assert.StartsWith("PREPEND", await AskAsync(b, Requests.Policy(sender: "one@example.net", testTime: T + 61)), StringComparison.Ordinal);
        // Triplet 2, an hour later: greylisted via B, passes via A (its second: the threshold).
        Assert.Equal(Greylisted, await AskAsync(b, Requests.Policy(sender: "two@example.net", testTime: T + 3700)));
        Assert.StartsWith("PREPEND", await AskAsync(a, Requests.Policy(sender: "two@example.net", testTime: T + 3761)), StringComparison.Ordinal);
        // A new triplet of that client now passes at once, on either host.
        Assert.Equal("DUNNO", await AskAsync(b, Requests.Policy(sender: "three@example.net", testTime: T + 3800)));
        await processB.WaitForLineAsync(l => l.Contains("action=pass, reason=client AWL", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Service_PasswordFromPgpasswordOrAFile_Serves()
    {
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.TcpUri(database);
        int port = PolicyServerProcess.FreePort();
        var viaEnvironment = BuiltPostgrey.Start(
            [$"--inet=127.0.0.1:{port}", $"--dbdir={_dir.File("env")}", $"--db={db}"],
            new Dictionary<string, string> { ["PGPASSWORD"] = PostgresCluster.Password });
        _processes.Add(viaEnvironment);
        await viaEnvironment.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(60));
        Assert.Equal(Greylisted, await AskAsync(new IPEndPoint(IPAddress.Loopback, port), Requests.Policy()));

        string passwordFile = _dir.Write("db-password", PostgresCluster.Password + "\n");
        var (_, viaFile) = await StartAsync(db, "file", $"--db-password-file={passwordFile}");
        Assert.Equal(Greylisted, await AskAsync(viaFile, Requests.Policy(sender: "other@example.net", testTime: T)));
        Assert.Equal(2, await cluster.ScalarAsync("SELECT count(*) FROM triplets", database));
    }

    [Theory]
    [InlineData("wrong-password", "password authentication failed for user \"postgrey\"")]
    [InlineData("missing-database", "database \"no_such_db\" does not exist")]
    [InlineData("bad-uri", "--db: unknown parameter 'colour'")]
    [InlineData("bad-port", "--db: 'x' is not a port number")]
    public async Task Start_DatabaseMisconfigured_ExitsOneNamingTheProblem(string problem, string expected)
    {
        await cluster.StartAsync();
        string passwordFile = _dir.Write("wrong", "not-the-password\n");
        string[] args = problem switch
        {
            "wrong-password" => [$"--db={cluster.TcpUri("postgres")}", $"--db-password-file={passwordFile}"],
            "missing-database" => [$"--db={cluster.SocketUri("no_such_db")}"],
            "bad-uri" => [$"--db={cluster.SocketUri("x")}?colour=blue"],
            _ => ["--db=postgresql://u@localhost:x/db"],
        };
        await using var process = BuiltPostgrey.Start([$"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={_dir.File("d")}", .. args]);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(1, process.ExitCode);
        Assert.Contains(process.Lines, l => l.StartsWith("ERROR: ", StringComparison.Ordinal) && l.Contains(expected, StringComparison.Ordinal));
        Assert.DoesNotContain(process.Lines, l => l.Contains("not-the-password", StringComparison.Ordinal));
    }

    /// <summary>
    /// PostgreSQL stopped (fast shutdown, as at a reboot) or its postmaster killed with SIGKILL
    /// (a crash: no shutdown checkpoint, crash recovery at the restart) while eight connections
    /// ask. Then every greylisting answered, before or after, is in the database: an answer
    /// leaves only after its COMMIT returned. The database commits as a production one does
    /// (synchronous_commit on; the test cluster has it off for speed).
    /// </summary>
    [Theory]
    [InlineData("stop")]
    [InlineData("kill -9")]
    public async Task Service_PostgresStoppedDuringLoad_DunnoMeanwhile_FewLogLines_DecidesAgain_NoAnsweredDecisionLost(string how)
    {
        string database = await cluster.CreateDatabaseAsync();
        await cluster.PsqlAsync($"ALTER DATABASE {database} SET synchronous_commit = on");
        var (process, endPoint) = await StartAsync(cluster.SocketUri(database), "a", "--db-timeout=2");
        int dunno = 0, greylisted = 0, other = 0;
        var answered = new System.Collections.Concurrent.ConcurrentBag<string>();
        using var stop = new CancellationTokenSource();
        // Eight connections asking in a loop, as Postfix's smtpd processes do; every request a
        // new triplet (no run of digits alone as a word: postgrey would fold it to '#').
        var load = Enumerable.Range(0, 8).Select(c => Task.Run(async () =>
        {
            await using var client = await PolicyClient.ConnectAsync(endPoint);
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                string sender = $"s{c}x{i}@example.net";
                string? answer = await client.AskAsync(Requests.Policy(sender: sender, testTime: T));
                if (answer == Greylisted)
                {
                    answered.Add(sender);
                }
                Interlocked.Increment(ref answer == "DUNNO" ? ref dunno : ref answer == Greylisted ? ref greylisted : ref other);
                if (answer == "DUNNO")
                {
                    await Task.Delay(5);
                }
            }
        })).ToList();

        await WaitForAsync(() => Volatile.Read(ref greylisted) > 100);
        await (how == "stop" ? cluster.StopAsync() : cluster.KillAsync());
        try
        {
            await WaitForAsync(() => Volatile.Read(ref dunno) > 200);
        }
        finally
        {
            await cluster.StartAsync();
        }
        int before = Volatile.Read(ref greylisted);
        await WaitForAsync(() => Volatile.Read(ref greylisted) > before + 100);
        stop.Cancel();
        await Task.WhenAll(load);

        Assert.Equal(0, other);
        Assert.False(process.HasExited);
        // Hundreds of requests answered DUNNO; the log says it twice: down, and back.
        Assert.Single(process.Lines, l => l.Contains("unreachable", StringComparison.Ordinal));
        Assert.Single(process.Lines, l => l.Contains("reachable again", StringComparison.Ordinal));
        Assert.DoesNotContain(process.Lines, l => l.Contains("database error", StringComparison.Ordinal));
        // Every greylisting answered is in the database, with the first-seen it was answered with.
        string[] stored = (await cluster.PsqlAsync($"SELECT key FROM triplets WHERE first_seen = {T}", database)).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var storedSenders = stored.Select(key => key.Split('/')[^2]).ToHashSet(StringComparer.Ordinal);
        Assert.Equal(greylisted, answered.Count);
        Assert.DoesNotContain(answered, sender => !storedSenders.Contains(sender));
    }

    /// <summary>
    /// Two services on one database, cleaning at the same interval: the one that takes the
    /// maintenance lock first cleans, the other logs that it skipped. A row lock held by another
    /// session (as an admin's open transaction would) keeps the first one's cleaning going, so
    /// the other's turn comes while it runs, whichever of the two comes first.
    /// </summary>
    [Fact]
    public async Task TwoServices_Maintenance_OneCleansTheOtherLogsThatItSkipped()
    {
        string database = await cluster.CreateDatabaseAsync();
        const long Day = 86400;
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        using (var store = PostgreSqlGreylistStore.Open(PostgreSqlStores.Options(cluster, database), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance))
        {
            await store.ExecuteAsync(0, (tx, _) =>
            {
                tx.SaveTriplet("192.0.2/expired@example.net/b@example.org", new TripletRecord(now - (40 * Day), now - (36 * Day)));
                tx.SaveTriplet("192.0.2/fresh@example.net/b@example.org", new TripletRecord(now - 100, now - 100));
                return 0;
            }, CancellationToken.None);
        }
        await using var admin = new Npgsql.NpgsqlConnection(PostgreSqlStores.Options(cluster, database).ConnectionString);
        await admin.OpenAsync(TestContext.Current.CancellationToken);
        await using var hold = await admin.BeginTransactionAsync(TestContext.Current.CancellationToken);
        await using (var lockRow = new Npgsql.NpgsqlCommand("SELECT 1 FROM triplets WHERE key LIKE '%/expired@%' FOR UPDATE", admin, hold))
        {
            await lockRow.ExecuteScalarAsync(TestContext.Current.CancellationToken);
        }

        // --db-timeout=30: the cleaning's statements may wait for the row lock (up to twice that).
        string db = cluster.SocketUri(database);
        var (a, _) = await StartAsync(db, "a", "--maintenance-interval=2", "--db-timeout=30");
        var (b, _) = await StartAsync(db, "b", "--maintenance-interval=2", "--db-timeout=30");
        PolicyServerProcess? skipper = null;
        await WaitForAsync(() => (skipper = a.Lines.Any(IsSkipped) ? a : b.Lines.Any(IsSkipped) ? b : null) is not null);
        PolicyServerProcess cleaner = skipper == a ? b : a;
        Assert.Contains(cleaner.Lines, l => l.Contains("cleaning up old entries...", StringComparison.Ordinal));
        await hold.RollbackAsync(TestContext.Current.CancellationToken);

        await cleaner.WaitForLineAsync(l => l.Contains("cleaning main database finished. before: 2, after: 1", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        Assert.Equal(0, await cluster.ScalarAsync("SELECT count(*) FROM triplets WHERE key LIKE '%/expired@%'", database));
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", database));
        // The skipper never ran its own cleaning meanwhile: it found the lock taken every time.
        Assert.DoesNotContain(skipper!.Lines, l => l.Contains("cleaning main database finished. before: 2", StringComparison.Ordinal));
        Assert.DoesNotContain(a.Lines.Concat(b.Lines), l => l.Contains("cleaning failed", StringComparison.Ordinal));

        static bool IsSkipped(string line) => line.Contains("cleaning skipped: another host sharing", StringComparison.Ordinal);
    }

    [Fact]
    public async Task Service_PostgresDownAtStart_ServesDunno_ThenGreylistsOnceItIsBack()
    {
        string database = await cluster.CreateDatabaseAsync();
        await cluster.StopAsync();
        PolicyServerProcess process;
        IPEndPoint endPoint;
        try
        {
            (process, endPoint) = await StartAsync(cluster.SocketUri(database), "a");
            Assert.Equal("DUNNO", await AskAsync(endPoint, Requests.Policy(testTime: T)));
        }
        finally
        {
            await cluster.StartAsync();
        }
        string? answer = "DUNNO";
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (answer == "DUNNO" && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
            answer = await AskAsync(endPoint, Requests.Policy(testTime: T));
        }
        Assert.Equal(Greylisted, answer);
        Assert.Single(process.Lines, l => l.Contains("unreachable", StringComparison.Ordinal));
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("condition not met within 60 s");
            }
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (PolicyServerProcess process in _processes)
        {
            await process.DisposeAsync();
        }
        _dir.Dispose();
    }
}
