using System.Globalization;
using System.Net;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>
/// <c>postgrey db init</c> and <c>postgrey db copy</c>, run as the built program against a private
/// PostgreSQL cluster and real SQLite files; the service started on the role db init prepared.
/// </summary>
public sealed class DbToolTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>, IAsyncDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private const long T = 1_800_000_000;
    private readonly TempDirectory _dir = new();
    private readonly List<PolicyServerProcess> _processes = [];

    private static Task<(int ExitCode, string Stdout, string Stderr)> Postgrey(params string[] args) => BuiltTool.RunAsync(args);

    /// <summary>The superuser over the socket: what a DBA runs db init as.</summary>
    private string AdminUri(string database) =>
        $"postgresql://postgres@{Uri.EscapeDataString(cluster.SocketDirectory)}:{cluster.Port}/{database}";

    private string RoleUri(string role, string database) =>
        $"postgresql://{role}@{Uri.EscapeDataString(cluster.SocketDirectory)}:{cluster.Port}/{database}";

    /// <summary>A login role of its own for this test, with no rights of any kind yet.</summary>
    private async Task<string> ServiceRoleAsync()
    {
        string role = "svc_" + Guid.NewGuid().ToString("N")[..8];
        await cluster.PsqlAsync($"CREATE ROLE {role} LOGIN");
        return role;
    }

    /// <summary>Owner, rights and contents: what db init may change.</summary>
    private async Task<string> CatalogAsync(string database) =>
        await cluster.PsqlAsync(
            "SELECT c.relname, pg_get_userbyid(c.relowner), c.relacl::text, c.reloptions::text, " +
            "(SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull, ',' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0) " +
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY c.relname",
            database)
        + await cluster.PsqlAsync("SELECT string_agg(version::text, ',') FROM schema_version", database);

    [Fact]
    public async Task Init_Twice_CreatesOwnedAndGrantedSchema_SecondRunChangesNothing()
    {
        string database = await cluster.CreateDatabaseAsync();
        string role = await ServiceRoleAsync();

        var (exit, stdout, stderr) = await Postgrey("db", "init", $"--db={AdminUri(database)}", "--owner=postgrey", $"--grant={role}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"schema version 1 created in {AdminUri(database)}; tables owned by postgrey; SELECT, INSERT, UPDATE, DELETE granted to {role}\n", stdout);
        string catalog = await CatalogAsync(database);
        Assert.Contains($"triplets|postgrey|{{postgrey=arwdDxt/postgrey,{role}=arwd/postgrey}}|{{fillfactor=70}}|key:text:true,first_seen:bigint:true,last_seen:bigint:true", catalog, StringComparison.Ordinal);
        Assert.Contains($"clients|postgrey|{{postgrey=arwdDxt/postgrey,{role}=arwd/postgrey}}|{{fillfactor=70}}|key:text:true,count:bigint:true,last_seen:bigint:true", catalog, StringComparison.Ordinal);
        Assert.Contains($"schema_version|postgrey|{{postgrey=arwdDxt/postgrey,{role}=r/postgrey}}||version:integer:true", catalog, StringComparison.Ordinal);

        (exit, stdout, stderr) = await Postgrey("db", "init", $"--db={AdminUri(database)}", "--owner=postgrey", $"--grant={role}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"schema version 1 present in {AdminUri(database)}; tables owned by postgrey; SELECT, INSERT, UPDATE, DELETE granted to {role}\n", stdout);
        Assert.Equal(catalog, await CatalogAsync(database));
    }

    [Fact]
    public async Task Service_AsRoleWithOnlyDmlRights_CreatesNothing_Decides()
    {
        string database = await cluster.CreateDatabaseAsync();
        string role = await ServiceRoleAsync();
        Assert.Equal(0, (await Postgrey("db", "init", $"--db={AdminUri(database)}", "--owner=postgrey", $"--grant={role}")).ExitCode);
        string catalog = await CatalogAsync(database);
        // The role could not create the schema if it tried: nothing but the four rights.
        Assert.Equal("f", (await cluster.PsqlAsync($"SELECT has_schema_privilege('{role}', 'public', 'CREATE')", database)).Trim());

        var (process, endPoint) = await StartServiceAsync(RoleUri(role, database));
        Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(testTime: T)));
        Assert.StartsWith("PREPEND X-Greylist: delayed 61 seconds", await AskAsync(endPoint, Requests.Policy(testTime: T + 61)), StringComparison.Ordinal);
        Assert.Contains(process.Lines, l => l.Contains("schema version 1", StringComparison.Ordinal));

        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", database));
        Assert.Equal(catalog, await CatalogAsync(database));
    }

    [Fact]
    public async Task Service_NoSchemaAndNoRightToCreateIt_ExitsOneSayingRunDbInit()
    {
        string database = await cluster.CreateDatabaseAsync();
        string role = await ServiceRoleAsync();

        await using var process = BuiltPostgrey.Start([$"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={_dir.File("d")}", $"--db={RoleUri(role, database)}"]);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(1, process.ExitCode);
        Assert.Contains(process.Lines, l => l == $"ERROR: can't use database {RoleUri(role, database)}: the schema is not there (or older than version 1) and role \"{role}\" may not create it (permission denied for schema public, SQLSTATE 42501): run postgrey db init as the database's owner");
        Assert.Equal("", (await cluster.PsqlAsync("SELECT string_agg(relname, ',') FROM pg_class WHERE relnamespace = 'public'::regnamespace", database)).Trim());
    }

    [Fact]
    public async Task Service_SchemaButNoRightsOnTheTables_ExitsOneNamingWhatIsMissing()
    {
        string database = await cluster.CreateDatabaseAsync();
        string role = await ServiceRoleAsync();
        Assert.Equal(0, (await Postgrey("db", "init", $"--db={AdminUri(database)}")).ExitCode);
        await cluster.PsqlAsync($"GRANT SELECT ON schema_version, triplets TO {role}", database);

        await using var process = BuiltPostgrey.Start([$"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={_dir.File("d")}", $"--db={RoleUri(role, database)}"]);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(1, process.ExitCode);
        Assert.Contains(process.Lines, l => l.EndsWith($"role \"{role}\" lacks triplets: INSERT, UPDATE, DELETE; clients: SELECT, INSERT, UPDATE, DELETE (GRANT them, or run postgrey db init --grant)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Init_AsARoleThatMayNotCreate_ExitsOneNothingCreated()
    {
        string database = await cluster.CreateDatabaseAsync();
        string role = await ServiceRoleAsync();

        var (exit, stdout, stderr) = await Postgrey("db", "init", $"--db={RoleUri(role, database)}");

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal($"postgrey db init: ERROR: can't use database {RoleUri(role, database)}: permission denied for schema public (SQLSTATE 42501); nothing changed\n", stderr);
    }

    [Fact]
    public async Task Copy_SqliteToPostgreSqlAndBack_EveryRowExactly()
    {
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);

        var (exit, stdout, stderr) = await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"copied {triplets.Count} triplets, {clients.Count} clients; kept 0\n", stdout);
        Assert.Equal(Lines(triplets.Select(r => (r.Key, r.FirstSeen, r.LastSeen))), await PgRowsAsync("triplets", "first_seen", database));
        Assert.Equal(Lines(clients.Select(r => (r.Key, r.Count, r.LastSeen))), await PgRowsAsync("clients", "count", database));

        string back = _dir.File("back");
        (exit, stdout, stderr) = await Postgrey("db", "copy", $"--from-db={db}", $"--to-dbdir={back}");

        Assert.True(exit == 0, stderr);
        Assert.Equal($"copied {triplets.Count} triplets, {clients.Count} clients; kept 0\n", stdout);
        Assert.Equal(SqliteImport.ReadTriplets(new SqliteStoreOptions { Directory = source }), SqliteImport.ReadTriplets(new SqliteStoreOptions { Directory = back }));
        Assert.Equal(SqliteImport.ReadClients(new SqliteStoreOptions { Directory = source }), SqliteImport.ReadClients(new SqliteStoreOptions { Directory = back }));
    }

    [Fact]
    public async Task Copy_Twice_SecondRunChangesNothing_EitherWay()
    {
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);
        Assert.Equal(0, (await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}")).ExitCode);
        var before = (await PgRowsAsync("triplets", "first_seen", database), await PgRowsAsync("clients", "count", database));
        long xmin = await cluster.ScalarAsync("SELECT max(xmin::text::bigint) FROM triplets", database);
        int total = triplets.Count + clients.Count;

        foreach (string[] again in new[] { Array.Empty<string>(), ["--replace"] })
        {
            var (exit, stdout, stderr) = await Postgrey(["db", "copy", $"--from-dbdir={source}", $"--to-db={db}", .. again]);
            Assert.True(exit == 0, stderr);
            Assert.Equal($"copied 0 triplets, 0 clients; kept {total}\n", stdout);
        }

        Assert.Equal(before.Item1, await PgRowsAsync("triplets", "first_seen", database));
        Assert.Equal(before.Item2, await PgRowsAsync("clients", "count", database));
        Assert.Equal(xmin, await cluster.ScalarAsync("SELECT max(xmin::text::bigint) FROM triplets", database)); // not a row rewritten

        string back = _dir.File("back");
        Assert.Equal(0, (await Postgrey("db", "copy", $"--from-db={db}", $"--to-dbdir={back}")).ExitCode);
        var (exit2, stdout2, _) = await Postgrey("db", "copy", $"--from-db={db}", $"--to-dbdir={back}", "--replace");
        Assert.Equal(0, exit2);
        Assert.Equal($"copied 0 triplets, 0 clients; kept {total}\n", stdout2);
    }

    [Fact]
    public async Task Copy_ExistingRows_KeptWithoutReplace_OverwrittenWithReplace()
    {
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);
        Assert.Equal(0, (await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}")).ExitCode);
        string key = triplets[0].Key;
        await cluster.PsqlAsync($"UPDATE triplets SET first_seen = 5, last_seen = 6 WHERE key = '{key}'", database);
        await cluster.PsqlAsync($"UPDATE clients SET count = 99 WHERE key = '{clients[0].Key}'", database);
        await cluster.PsqlAsync("INSERT INTO triplets VALUES ('192.0.2.0/only-in-pg@example.net/x@example.org', 1, 2)", database);

        var (exit, stdout, _) = await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}");
        Assert.Equal(0, exit);
        Assert.Equal($"copied 0 triplets, 0 clients; kept {triplets.Count + clients.Count}\n", stdout);
        Assert.Equal(5, await cluster.ScalarAsync($"SELECT first_seen FROM triplets WHERE key = '{key}'", database));

        (exit, stdout, _) = await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}", "--replace");
        Assert.Equal(0, exit);
        Assert.Equal($"copied 1 triplets, 1 clients; kept {triplets.Count + clients.Count - 2}\n", stdout);
        List<string> after = await PgRowsAsync("triplets", "first_seen", database);
        Assert.Equal(Lines(triplets.Select(r => (r.Key, r.FirstSeen, r.LastSeen))), after.Where(l => !l.Contains("only-in-pg", StringComparison.Ordinal)));
        Assert.Contains("192.0.2.0/only-in-pg@example.net/x@example.org 1,2", after); // rows the source never had stay
        Assert.Equal(Lines(clients.Select(r => (r.Key, r.Count, r.LastSeen))), await PgRowsAsync("clients", "count", database));
    }

    [Fact]
    public async Task Copy_IntoADbdirTheServiceRunsOn_RefusedNothingWritten()
    {
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);
        Assert.Equal(0, (await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}")).ExitCode);
        string target = _dir.File("live");
        var (_, endPoint) = await StartServiceAsync(null, target);
        Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(testTime: T)));

        var (exit, stdout, stderr) = await Postgrey("db", "copy", $"--from-db={db}", $"--to-dbdir={target}");

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal($"postgrey db copy: ERROR: {target}/postgrey.lock is locked: the service is running on {target}; stop it first. Nothing copied\n", stderr);
        Assert.Single(SqliteImport.ReadTriplets(new SqliteStoreOptions { Directory = target }));
    }

    [Fact]
    public async Task Copy_ReplaceIntoADatabaseAServiceUses_RefusedNothingWritten()
    {
        string database = await cluster.CreateDatabaseAsync();
        string db = cluster.SocketUri(database);
        var (_, endPoint) = await StartServiceAsync(db);
        Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(testTime: T)));
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);

        var (exit, stdout, stderr) = await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={db}", "--replace");

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Equal($"postgrey db copy: ERROR: a postgrey service is connected to {db}; stop every one before --replace. Nothing copied\n", stderr);
        Assert.Equal(1, await cluster.ScalarAsync("SELECT count(*) FROM triplets", database));
    }

    [Theory]
    [InlineData("init", "wrong-password", "password authentication failed for user \"postgrey\" (SQLSTATE 28P01); nothing changed")]
    [InlineData("init", "missing-database", "database \"no_such_db\" does not exist (SQLSTATE 3D000); nothing changed")]
    [InlineData("to-pg", "wrong-password", "password authentication failed for user \"postgrey\" (SQLSTATE 28P01); nothing copied")]
    [InlineData("to-pg", "missing-database", "database \"no_such_db\" does not exist (SQLSTATE 3D000); nothing copied")]
    [InlineData("from-pg", "wrong-password", "password authentication failed for user \"postgrey\" (SQLSTATE 28P01); nothing copied")]
    [InlineData("from-pg", "missing-database", "database \"no_such_db\" does not exist (SQLSTATE 3D000); nothing copied")]
    [InlineData("from-pg", "no-schema", "no postgrey schema there (no table schema_version); nothing copied")]
    [InlineData("to-pg", "refused", "Connection refused; nothing copied")]
    public async Task DatabaseMisconfigured_OneLineNamingTheProblem_ExitOne(string what, string problem, string expected)
    {
        await cluster.StartAsync();
        string passwordFile = _dir.Write("wrong", "not-the-password\n");
        string source = _dir.File("source");
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, [new("192.0.2.0/a@b/c@d", 1, 2)], [], replace: false);
        string uri = problem switch
        {
            "wrong-password" => cluster.TcpUri("postgres"),
            "missing-database" => cluster.SocketUri("no_such_db"),
            "no-schema" => cluster.SocketUri(await cluster.CreateDatabaseAsync()),
            _ => $"postgresql://postgrey@127.0.0.1:{PolicyServerProcess.FreePort()}/postgrey",
        };
        string[] args = what switch
        {
            "init" => ["db", "init", $"--db={uri}"],
            "to-pg" => ["db", "copy", $"--from-dbdir={source}", $"--to-db={uri}"],
            _ => ["db", "copy", $"--from-db={uri}", $"--to-dbdir={_dir.File("target")}"],
        };
        string[] password = problem == "wrong-password" ? [$"--db-password-file={passwordFile}"] : [];

        var (exit, stdout, stderr) = await Postgrey([.. args, .. password]);

        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith($"postgrey db {what switch { "init" => "init", _ => "copy" }}: ERROR: can't ", stderr, StringComparison.Ordinal);
        Assert.EndsWith(expected + "\n", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-password", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_dir.File("target")));
    }

    [Fact]
    public async Task Copy_PasswordFromPgpasswordOrAFile_OverTcp()
    {
        string database = await cluster.CreateDatabaseAsync();
        string source = _dir.File("source");
        var (triplets, clients) = SampleRows();
        SqliteImport.Upsert(new SqliteStoreOptions { Directory = source }, triplets, clients, replace: false);
        string passwordFile = _dir.Write("pw", PostgresCluster.Password + "\n");

        var (exit, stdout, stderr) = await Postgrey("db", "copy", $"--from-dbdir={source}", $"--to-db={cluster.TcpUri(database)}", $"--db-password-file={passwordFile}");
        Assert.True(exit == 0, stderr);
        Assert.StartsWith($"copied {triplets.Count} triplets", stdout, StringComparison.Ordinal);

        (exit, stdout, stderr) = await BuiltTool.RunAsync(
            ["db", "init", $"--db={cluster.TcpUri(database)}"],
            new Dictionary<string, string> { ["PGPASSWORD"] = PostgresCluster.Password });
        Assert.True(exit == 0, stderr);
        Assert.StartsWith("schema version 1 present", stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("db")]
    [InlineData("db", "bogus")]
    [InlineData("db", "init")]
    [InlineData("db", "init", "--db=postgresql://u@localhost:x/db")]
    [InlineData("db", "init", "--db=postgresql://u@localhost/db?colour=blue")]
    [InlineData("db", "init", "--db=postgresql://u@localhost/db", "--owner=")]
    [InlineData("db", "init", "--db=postgresql://u@localhost/db", "--grant", "")]
    [InlineData("db", "copy", "--from-dbdir", "", "--to-db=postgresql://u@localhost/b")]
    [InlineData("db", "init", "--db=postgresql://u@localhost/db", "--db-password-file=/nonexistent/pw")]
    [InlineData("db", "copy")]
    [InlineData("db", "copy", "--from-dbdir=/tmp/a")]
    [InlineData("db", "copy", "--from-dbdir=/tmp/a", "--to-dbdir=/tmp/b")]
    [InlineData("db", "copy", "--from-db=postgresql://u@localhost/a", "--to-db=postgresql://u@localhost/b")]
    [InlineData("db", "copy", "--from-dbdir=/tmp/a", "--from-db=postgresql://u@localhost/a", "--to-dbdir=/tmp/b")]
    [InlineData("db", "copy", "--from-dbdir=/tmp/a", "--to-db=postgresql://u@localhost/b", "extra")]
    public async Task BadUsage_ExitsTwoWithOneLine(params string[] args)
    {
        var (exit, stdout, stderr) = await Postgrey(args);

        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Matches(@"^postgrey db( init| copy)?: [^\n]+ \(see postgrey db( init| copy)? --help\)\n$", stderr);
    }

    [Fact]
    public async Task Help_ExitsZero_NamesTheFlags()
    {
        var (exit, stdout, _) = await Postgrey("db", "copy", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--from-dbdir <DIR>", stdout, StringComparison.Ordinal);
        Assert.Contains("--to-db <URI>", stdout, StringComparison.Ordinal);
        Assert.Contains("--replace", stdout, StringComparison.Ordinal);
        (exit, stdout, _) = await Postgrey("db", "init", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--grant <ROLE>", stdout, StringComparison.Ordinal);
        Assert.Contains("--db-password-file <PATH>", stdout, StringComparison.Ordinal);
    }

    /// <summary>Rows of every shape the store keeps: IPv4 and IPv6 subnets, --lookup-by-host,
    /// --privacy hashes, the empty sender, non-ASCII, long keys, extreme times.</summary>
    private static (List<TripletRow> Triplets, List<ClientRow> Clients) SampleRows()
    {
        var triplets = new List<TripletRow>
        {
            new("192.0.2.0/a@example.net/b@example.org", 1_700_000_000, 1_700_000_400),
            new("192.0.2.10/32/a@example.net/b@example.org", 1_700_000_001, 1_700_000_001),
            new("2001:db8:0:0:0:0:0:0/x@example.net/y@example.org", 0, long.MaxValue),
            new("0123456789abcdef0123456789abcdef01234567", 1, 2),
            new("198.51.100.0//bounce@example.org", 3, 4),
            new("203.0.113.0/jörg@exämple.net/用户@例子.公司", 5, 6),
            new("203.0.113.0/" + new string('l', 400) + "@example.net/z@example.org", 7, 8),
            new("203.0.113.0/Upper@Example.NET/lower@example.org", 9, 10),
        };
        for (int i = 0; i < 25_000; i++)
        {
            triplets.Add(new($"10.{i % 250}.{i / 250}.0/s{i}@sender.example/r{i % 17}@example.com", T + i, T + i + 300));
        }
        var clients = new List<ClientRow>
        {
            new("192.0.2.10", 3, 1_700_000_400),
            new("2001:DB8:0:0:0:0:0:1", 4, 1_700_000_500),
            new("0123456789abcdef0123456789abcdef01234567", 5, 1_700_000_600),
        };
        return (triplets, clients);
    }

    private static List<string> Lines(IEnumerable<(string Key, long A, long B)> rows) =>
        [.. rows.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Key} {r.A},{r.B}")).Order(StringComparer.Ordinal)];

    private async Task<List<string>> PgRowsAsync(string table, string first, string database)
    {
        string text = await cluster.PsqlAsync($"SELECT key || ' ' || {first} || ',' || last_seen FROM {table}", database);
        return [.. text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal)];
    }

    private async Task<(PolicyServerProcess Process, IPEndPoint EndPoint)> StartServiceAsync(string? db, string? dbdir = null)
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
        int port = PolicyServerProcess.FreePort();
        string[] store = db is null ? [] : [$"--db={db}"];
        var process = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={dbdir ?? _dir.File("svc-" + port.ToString(CultureInfo.InvariantCulture))}", "--allow-test-time", "--delay=60",
            $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}", .. store]);
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

    public async ValueTask DisposeAsync()
    {
        foreach (PolicyServerProcess process in _processes)
        {
            await process.DisposeAsync();
        }
        _dir.Dispose();
    }
}
