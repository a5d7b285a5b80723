using System.Net;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary>
/// <c>postgrey import --db=URI</c> and <c>postgrey export --db=URI</c>: postgrey's BerkeleyDB files,
/// made by Debian's postgrey, straight into a private PostgreSQL cluster and back out for db_load.
/// </summary>
public sealed class PostgreSqlImportExportTests(PostgreyRuns runs, PostgresCluster cluster) : IClassFixture<PostgresCluster>, IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private async Task<List<string>> PgRowsAsync(string database, string table, string first)
    {
        string text = await cluster.PsqlAsync($"SELECT key || ' ' || {first} || ',' || last_seen FROM {table}", database);
        return [.. text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal)];
    }

    [Theory]
    [InlineData("default")]
    [InlineData("awl1")]
    [InlineData("privacy")]
    public async Task Import_PostgreysDatabase_IntoPostgreSql_EveryRow_TwiceChangesNothing(string flagSet)
    {
        string from = await runs.DbdirAsync(flagSet);
        var triplets = Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(from, PostgreyDatabase.TripletsFileName)));
        var clients = Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(from, PostgreyDatabase.ClientsFileName)));
        string database = await cluster.CreateDatabaseAsync();

        var (exit, stdout, stderr) = Fixtures.Postgrey("import", $"--from={from}", $"--db={cluster.SocketUri(database)}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"imported {triplets.Count} triplets, {clients.Count} clients; skipped 0; rejected 0\n", stdout);
        Assert.Equal(triplets, await PgRowsAsync(database, "triplets", "first_seen"));
        Assert.Equal(clients, await PgRowsAsync(database, "clients", "count"));

        (exit, stdout, _) = Fixtures.Postgrey("import", $"--from={from}", $"--db={cluster.SocketUri(database)}", "--replace");
        Assert.Equal(0, exit);
        Assert.Equal($"imported 0 triplets, 0 clients; skipped {triplets.Count + clients.Count}; rejected 0\n", stdout);
        Assert.Equal(triplets, await PgRowsAsync(database, "triplets", "first_seen"));
    }

    [Fact]
    public async Task Export_FromPostgreSql_ThroughDbLoad_SameDumpAsPostgreysOriginal()
    {
        Requires.Program(Fixtures.DbLoadPath, "db-util");
        string from = await runs.DbdirAsync("awl1");
        string database = await cluster.CreateDatabaseAsync();
        string passwordFile = _dir.Write("pw", PostgresCluster.Password + "\n");
        string db = cluster.TcpUri(database); // over TCP, with the password from a file
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--db={db}", $"--db-password-file={passwordFile}").ExitCode);

        foreach (var (name, args) in new[] { (PostgreyDatabase.TripletsFileName, Array.Empty<string>()), (PostgreyDatabase.ClientsFileName, ["--clients"]) })
        {
            var (exit, dump, stderr) = Fixtures.Postgrey(["export", $"--db={db}", $"--db-password-file={passwordFile}", .. args]);
            Assert.True(exit == 0, stderr);
            string loaded = _dir.File("loaded-" + name);
            Fixtures.DbLoad(loaded, dump);
            Assert.Equal(Fixtures.AsLines(Fixtures.DbDumpPairs(Path.Combine(from, name))), Fixtures.AsLines(Fixtures.DbDumpPairs(loaded)));
        }
    }

    /// <summary>The point of it: a sender postgrey greylisted is let through on its retry by our
    /// service on PostgreSQL, on any host sharing it.</summary>
    [Fact]
    public async Task Import_ThenOurServiceOnPostgreSql_PassesTheRetryPostgreyWouldHavePassed()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        string from = _dir.File("first-attempts");
        Delivery[] first = [new("192.0.2.44", "x@example.net", "y@example.org", Fixtures.T0), new("2001:db8::44", "x@example.net", "y@example.org", Fixtures.T0)];
        Assert.All(await Fixtures.RunPostgreyAsync(from, [], first), a => Assert.StartsWith("DEFER_IF_PERMIT", a));
        string database = await cluster.CreateDatabaseAsync();
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--db={cluster.SocketUri(database)}").ExitCode);

        int port = PolicyServerProcess.FreePort();
        await using var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={_dir.File("lock")}", $"--db={cluster.SocketUri(database)}", "--allow-test-time"]);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        await service.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(60));
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        foreach (Delivery d in first)
        {
            string? answer = await client.AskAsync(Requests.Policy(clientAddress: d.Client, sender: d.Sender, recipient: d.Recipient, testTime: d.Time + 400));
            Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", answer);
        }
    }

    [Theory]
    [InlineData("import", "wrong-password", "postgrey import: ERROR: can't write database {0}: password authentication failed for user \"postgrey\" (SQLSTATE 28P01); nothing imported")]
    [InlineData("import", "missing-database", "postgrey import: ERROR: can't write database {0}: database \"no_such_db\" does not exist (SQLSTATE 3D000); nothing imported")]
    [InlineData("export", "wrong-password", "postgrey export: ERROR: can't read database {0}: password authentication failed for user \"postgrey\" (SQLSTATE 28P01)")]
    [InlineData("export", "missing-database", "postgrey export: ERROR: can't read database {0}: database \"no_such_db\" does not exist (SQLSTATE 3D000)")]
    public async Task Db_Misconfigured_OneLineExitOne(string tool, string problem, string expected)
    {
        string from = await runs.DbdirAsync("default");
        await cluster.StartAsync();
        string passwordFile = _dir.Write("wrong", "not-the-password\n");
        string uri = problem == "wrong-password" ? cluster.TcpUri("postgres") : cluster.SocketUri("no_such_db");
        string[] args = tool == "import" ? ["import", $"--from={from}", $"--db={uri}"] : ["export", $"--db={uri}"];
        string[] password = problem == "wrong-password" ? [$"--db-password-file={passwordFile}"] : [];

        var (exit, stdout, stderr) = Fixtures.Postgrey([.. args, .. password]);

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        // As messages name it: the socket directory escaped, the port spelled out.
        string described = problem == "wrong-password" ? cluster.TcpUri("postgres") : cluster.SocketUri("no_such_db");
        Assert.Equal(string.Format(System.Globalization.CultureInfo.InvariantCulture, expected, described) + "\n", stderr);
    }

    [Theory]
    [InlineData("import")]
    [InlineData("export")]
    public void DbAndDbdirBoth_BadUsage_ExitsTwo(string tool)
    {
        var (exit, stdout, stderr) = Fixtures.Postgrey(tool, "--dbdir=/tmp/x", "--db=postgresql://postgrey@localhost/postgrey");
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Equal($"postgrey {tool}: --dbdir and --db: give one of them (see postgrey {tool} --help)\n", stderr);
    }
}
