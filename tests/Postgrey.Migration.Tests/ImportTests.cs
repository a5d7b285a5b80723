using System.Net;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary><c>postgrey import</c>, run as the built program on files made by Debian's postgrey.</summary>
public sealed class ImportTests(PostgreyRuns runs) : IDisposable
{
    private readonly TempDirectory _dir = new();

    public static TheoryData<string> FlagSets => [.. Fixtures.FlagSets.Keys];

    public void Dispose() => _dir.Dispose();

    private string Ours => _dir.File("ours");

    [Theory]
    [MemberData(nameof(FlagSets))]
    public async Task Import_PostgreysDatabase_EveryTripletAndClientWithItsTimes(string flagSet)
    {
        string from = await runs.DbdirAsync(flagSet);
        var triplets = Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(from, PostgreyDatabase.TripletsFileName)));
        var clients = Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(from, PostgreyDatabase.ClientsFileName)));

        var (exit, stdout, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"imported {triplets.Count} triplets, {clients.Count} clients; skipped 0; rejected 0\n", stdout);
        var (ourTriplets, ourClients) = Fixtures.OurRows(Ours);
        Assert.Equal(triplets, ourTriplets);
        Assert.Equal(clients, ourClients);
        if (flagSet == "awl1")
        {
            Assert.NotEmpty(clients);
        }
    }

    [Fact]
    public async Task Import_Twice_SecondRunChangesNothing()
    {
        string from = await runs.DbdirAsync("awl1");
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}").ExitCode);
        var before = Fixtures.OurRows(Ours);

        var (exit, stdout, _) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.Equal(0, exit);
        Assert.Equal($"imported 0 triplets, 0 clients; skipped {before.Triplets.Count + before.Clients.Count}; rejected 0\n", stdout);
        Fixtures.AssertSameRows(before, Fixtures.OurRows(Ours));
        // --replace with the same values changes nothing either.
        (exit, stdout, _) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}", "--replace");
        Assert.Equal(0, exit);
        Assert.StartsWith("imported 0 triplets, 0 clients;", stdout);
    }

    [Fact]
    public async Task Import_ExistingRows_KeptWithoutReplace_OverwrittenWithReplace()
    {
        string from = await runs.DbdirAsync("default");
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}").ExitCode);
        var original = Fixtures.OurRows(Ours);
        string key = original.Triplets[0].Split(' ')[0];
        Execute($"UPDATE triplets SET first_seen = 5, last_seen = 6 WHERE key = '{key}'");
        Execute("INSERT INTO triplets VALUES ('192.0.2.0/ours@example.net/x@example.org', 1, 2)");

        var (exit, stdout, _) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");
        Assert.Equal(0, exit);
        Assert.StartsWith("imported 0 triplets, 0 clients;", stdout);
        Assert.Contains($"{key} 5,6", Fixtures.OurRows(Ours).Triplets);

        (exit, stdout, _) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}", "--replace");
        Assert.Equal(0, exit);
        Assert.StartsWith("imported 1 triplets, 0 clients;", stdout);
        var after = Fixtures.OurRows(Ours).Triplets;
        Assert.Equal(original.Triplets, after.Where(r => !r.StartsWith("192.0.2.0/ours@", StringComparison.Ordinal)));
        Assert.Contains("192.0.2.0/ours@example.net/x@example.org 1,2", after); // rows postgrey never had stay
    }

    [Theory]
    [InlineData(PostgreyDatabase.TripletsFileName, "truncated")]
    [InlineData(PostgreyDatabase.ClientsFileName, "truncated")]
    [InlineData(PostgreyDatabase.ClientsFileName, "damaged")]
    public async Task Import_BadFile_ExitsOneNamingFileAndOffset_NothingImported(string name, string how)
    {
        string from = _dir.File("from");
        PostgreyRuns.CopyTo(await runs.DbdirAsync("awl1"), from);
        string file = Path.Combine(from, name);
        byte[] bytes = await File.ReadAllBytesAsync(file, TestContext.Current.CancellationToken);
        if (how == "truncated")
        {
            bytes = bytes[..(bytes.Length - 100)];
        }
        else
        {
            int leaf = bytes.Length / 4096 - 1;
            bytes[(leaf * 4096) + 26] = 0xff; // the first item offset, past the page
            bytes[(leaf * 4096) + 27] = 0xff;
        }
        await File.WriteAllBytesAsync(file, bytes, TestContext.Current.CancellationToken);
        Assert.Equal(0, SeedOurs().ExitCode); // our database has a row already
        var before = Fixtures.OurRows(Ours);

        var (exit, stdout, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.Matches($@"^postgrey import: ERROR: {System.Text.RegularExpressions.Regex.Escape(file)}: at offset \d+: .+; nothing imported\n$", stderr);
        Fixtures.AssertSameRows(before, Fixtures.OurRows(Ours));
    }

    [Fact]
    public async Task Import_WhilePostgreyRunsOnTheDbdir_RefusesNamingTheLock()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        string dbdir = _dir.File("live");
        Directory.CreateDirectory(dbdir);
        if (Requires.IsRoot)
        {
            Assert.Equal(0, Fixtures.Run("chown", ["postgrey:postgrey", dbdir]).ExitCode);
        }
        int port = PolicyServerProcess.FreePort();
        await using var postgrey = PolicyServerProcess.Start(Fixtures.RealPostgrey, [$"--inet=127.0.0.1:{port}", $"--dbdir={dbdir}"], stopGracefully: true);
        await postgrey.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        // Both defaults point at one dbdir, as on a Debian system: --from and --dbdir alike.
        var (exit, stdout, stderr) = Fixtures.Postgrey("import", $"--from={dbdir}", $"--dbdir={dbdir}");

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal($"postgrey import: ERROR: {dbdir}/postgrey.lock is locked: postgrey is running on {dbdir}; stop it first. Nothing imported\n", stderr);
        Assert.False(File.Exists(Path.Combine(dbdir, "postgrey.sqlite3")));
    }

    [Fact]
    public async Task Import_FromADbdirPostgreyRunsOn_RefusesNothingWritten()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        string from = _dir.File("live");
        Directory.CreateDirectory(from);
        if (Requires.IsRoot)
        {
            Assert.Equal(0, Fixtures.Run("chown", ["postgrey:postgrey", from]).ExitCode);
        }
        int port = PolicyServerProcess.FreePort();
        await using var postgrey = PolicyServerProcess.Start(Fixtures.RealPostgrey, [$"--inet=127.0.0.1:{port}", $"--dbdir={from}"], stopGracefully: true);
        await postgrey.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        var (exit, _, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.Equal(1, exit);
        Assert.Equal($"postgrey import: ERROR: {from}/postgrey.lock is locked: postgrey is running on {from}; stop it first. Nothing imported\n", stderr);
        Assert.False(Directory.Exists(Ours));
    }

    [Fact]
    public async Task Import_WhileOurServiceRunsOnTheDbdir_Refuses()
    {
        string from = await runs.DbdirAsync("default");
        int port = PolicyServerProcess.FreePort();
        await using var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={Ours}"]);
        await service.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        var (exit, _, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.Equal(1, exit);
        Assert.Contains("postgrey.lock is locked", stderr, StringComparison.Ordinal);
        Assert.Empty(Fixtures.OurRows(Ours).Triplets);
    }

    /// <summary>The forms older postgrey versions wrote, made into a real BerkeleyDB file by db_load.</summary>
    [Fact]
    public void Import_OlderKeyForms_RespelledAsPostgrey137_BadOnesRejected()
    {
        Requires.Program(Fixtures.DbLoadPath, "db-util");
        string from = _dir.File("old");
        Directory.CreateDirectory(from);
        Fixtures.DbLoad(Path.Combine(from, PostgreyDatabase.TripletsFileName), Fixtures.Dump(
            ("192.0.2.0/a@example.net/b@example.org", "100,200"),                 // 1.37 subnet
            ("192.0.2.10/32/a@example.net/b@example.org", "100,200"),             // --lookup-by-host
            ("198.51.100.0/24/c@example.net/d@example.org", "300,400"),           // 1.36: prefix after the subnet
            ("203.0.113/e@example.net/f@example.org", "500,600,17"),              // 1.2x: three octets, host part kept
            ("2001:db8::/g@example.net/h@example.org", "700,800"),                // IPv6 spelled by Postfix
            ("2001:db8:0:0:0:0:0:0/64/i@example.net/j@example.org", "900,1000"),  // 1.36 IPv6
            ("0123456789abcdef0123456789abcdef01234567", "1100,1200"),            // --privacy
            ("192.0.2.0//empty-sender@example.org", "1300,1400"),                 // <> sender
            ("not-an-address/k@example.net/l@example.org", "1,2"),
            ("192.0.2.0/m@example.net/n@example.org", "soon,later"),
            ("nokey", "1,2")));
        Fixtures.DbLoad(Path.Combine(from, PostgreyDatabase.ClientsFileName), Fixtures.Dump(
            ("192.0.2.10", "3,200"),
            ("2001:db8::1", "4,300"),
            ("0123456789abcdef0123456789abcdef01234567", "5,400"),
            ("mx.example.net", "1,2")));

        var (exit, stdout, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");

        Assert.True(exit == 0, stderr);
        string[] lines = stdout.TrimEnd('\n').Split('\n');
        Assert.Equal("imported 8 triplets, 3 clients; skipped 0; rejected 4", lines[^1]);
        Assert.Equal(4, lines.Count(l => l.StartsWith("rejected ", StringComparison.Ordinal)));
        Assert.Contains("rejected postgrey.db \"not-an-address/k@example.net/l@example.org\" = \"1,2\": client part \"not-an-address\" is not an IP address", lines);
        Assert.Contains("rejected postgrey_clients.db \"mx.example.net\" = \"1,2\": not an IP address nor a --privacy SHA-1", lines);
        var (triplets, clients) = Fixtures.OurRows(Ours);
        Assert.Equal(
        [
            "0123456789abcdef0123456789abcdef01234567 1100,1200",
            "192.0.2.0//empty-sender@example.org 1300,1400",
            "192.0.2.0/a@example.net/b@example.org 100,200",
            "192.0.2.10/32/a@example.net/b@example.org 100,200",
            "198.51.100.0/c@example.net/d@example.org 300,400",
            "2001:db8:0:0:0:0:0:0/g@example.net/h@example.org 700,800",
            "2001:db8:0:0:0:0:0:0/i@example.net/j@example.org 900,1000",
            "203.0.113.0/e@example.net/f@example.org 500,600",
        ], triplets);
        Assert.Equal(["0123456789abcdef0123456789abcdef01234567 5,400", "192.0.2.10 3,200", "2001:DB8:0:0:0:0:0:1 4,300"], clients);
    }

    /// <summary>The point of the import: a sender postgrey greylisted is let through by our
    /// service on its retry, with the same flags, instead of being greylisted a second time.</summary>
    [Theory]
    [InlineData("default")]
    [InlineData("lookup-by-host")]
    [InlineData("privacy")]
    public async Task Import_ThenOurService_PassesTheRetryPostgreyWouldHavePassed(string flagSet)
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        string from = _dir.File("first-attempts");
        Delivery[] first = [new("192.0.2.44", "x@example.net", "y@example.org", Fixtures.T0), new("2001:db8::44", "x@example.net", "y@example.org", Fixtures.T0)];
        Assert.All(await Fixtures.RunPostgreyAsync(from, Fixtures.FlagSets[flagSet], first), a => Assert.StartsWith("DEFER_IF_PERMIT", a));
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}").ExitCode);

        int port = PolicyServerProcess.FreePort();
        await using var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={Ours}", "--allow-test-time", .. Fixtures.FlagSets[flagSet]]);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        await service.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(30));
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        foreach (Delivery d in first)
        {
            string? answer = await client.AskAsync(Requests.Policy(clientAddress: d.Client, sender: d.Sender, recipient: d.Recipient, testTime: d.Time + 400));
            Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", answer);
        }
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("--db=postgresql://localhost:x/postgrey")]
    [InlineData("--db-password-file=/etc/hostname")]
    [InlineData("extra")]
    [InlineData("--from")]
    public void Import_BadUsage_ExitsTwoWithOneLine(string arg)
    {
        var (exit, stdout, stderr) = Fixtures.Postgrey("import", arg);
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Matches(@"^postgrey import: [^\n]+ \(see postgrey import --help\)\n$", stderr);
    }

    [Fact]
    public void Import_Help_ExitsZeroAndNamesDb()
    {
        var (exit, stdout, _) = Fixtures.Postgrey("import", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--from <DIR>", stdout, StringComparison.Ordinal);
        Assert.Contains("--replace", stdout, StringComparison.Ordinal);
        Assert.Contains("--db <URI>", stdout, StringComparison.Ordinal);
        Assert.Contains("--db-password-file <PATH>", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Import_NoPostgreyDatabase_ExitsOneWithOneLine()
    {
        string from = _dir.File("nothing");
        Directory.CreateDirectory(from);
        var (exit, _, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");
        Assert.Equal(1, exit);
        Assert.Equal($"postgrey import: ERROR: {from}/postgrey.db does not exist; nothing imported\n", stderr);
    }

    private (int ExitCode, string Stdout, string Stderr) SeedOurs()
    {
        string from = _dir.File("seed");
        Directory.CreateDirectory(from);
        Fixtures.DbLoad(Path.Combine(from, PostgreyDatabase.TripletsFileName), Fixtures.Dump(("192.0.2.0/seed@example.net/x@example.org", "1,2")));
        return Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}");
    }

    private void Execute(string sql)
    {
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(Ours, "postgrey.sqlite3")};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
