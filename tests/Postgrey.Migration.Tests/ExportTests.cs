using System.Net;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary><c>postgrey export</c>: what db_load makes of it is postgrey's database again.</summary>
public sealed class ExportTests(PostgreyRuns runs) : IDisposable
{
    private readonly TempDirectory _dir = new();

    public static TheoryData<string> FlagSets => [.. Fixtures.FlagSets.Keys];

    public void Dispose() => _dir.Dispose();

    private string Ours => _dir.File("ours");

    [Theory]
    [MemberData(nameof(FlagSets))]
    public async Task Export_ThroughDbLoad_SameDumpAsPostgreysOriginal(string flagSet)
    {
        Requires.Program(Fixtures.DbLoadPath, "db-util");
        string from = await runs.DbdirAsync(flagSet);
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={from}", $"--dbdir={Ours}").ExitCode);

        foreach (var (name, args) in new[] { (PostgreyDatabase.TripletsFileName, Array.Empty<string>()), (PostgreyDatabase.ClientsFileName, ["--clients"]) })
        {
            var (exit, dump, stderr) = Fixtures.Postgrey(["export", $"--dbdir={Ours}", .. args]);
            Assert.True(exit == 0, stderr);
            string loaded = _dir.File("loaded-" + name);
            Fixtures.DbLoad(loaded, dump);
            Assert.Equal(Fixtures.DbDumpPairs(Path.Combine(from, name)), Fixtures.DbDumpPairs(loaded), PairComparer.Instance);
        }
    }

    /// <summary>Going back: postgrey run on the files db_load made from our export remembers
    /// every triplet, and lets the retries through.</summary>
    [Fact]
    public async Task Export_LoadedIntoPostgrey_PostgreyPassesTheRetries()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        Requires.Program(Fixtures.DbLoadPath, "db-util");
        string first = _dir.File("first");
        Delivery[] attempts = [new("192.0.2.55", "x@example.net", "y@example.org", Fixtures.T0), new("2001:db8::55", "p@example.net", "q@example.org", Fixtures.T0)];
        await Fixtures.RunPostgreyAsync(first, [], attempts);
        Assert.Equal(0, Fixtures.Postgrey("import", $"--from={first}", $"--dbdir={Ours}").ExitCode);

        string back = _dir.File("back");
        Directory.CreateDirectory(back);
        string file = _dir.File("export.txt");
        Assert.Equal(0, Fixtures.Postgrey("export", $"--dbdir={Ours}", $"--output={file}").ExitCode);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Fixtures.DbLoad(Path.Combine(back, PostgreyDatabase.TripletsFileName), await File.ReadAllTextAsync(file, TestContext.Current.CancellationToken));

        var answers = await Fixtures.RunPostgreyAsync(back, [], attempts.Select(d => d with { Time = d.Time + 400 }));

        Assert.All(answers, a => Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", a));
    }

    [Fact]
    public void Export_NoDatabase_ExitsOneWithOneLine()
    {
        var (exit, stdout, stderr) = Fixtures.Postgrey("export", $"--dbdir={_dir.File("none")}");
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Matches(@"^postgrey export: ERROR: can't read [^\n]+postgrey\.sqlite3: [^\n]+\n$", stderr);
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("--db=postgresql://localhost/postgrey?colour=blue")]
    [InlineData("--output")]
    public void Export_BadUsage_ExitsTwoWithOneLine(string arg)
    {
        var (exit, stdout, stderr) = Fixtures.Postgrey("export", arg);
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Matches(@"^postgrey export: [^\n]+ \(see postgrey export --help\)\n$", stderr);
    }

    [Fact]
    public void Export_Help_ExitsZero()
    {
        var (exit, stdout, _) = Fixtures.Postgrey("export", "--help");
        Assert.Equal(0, exit);
        Assert.Contains("--clients", stdout, StringComparison.Ordinal);
        Assert.Contains("db_load", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Export_WhileOurServiceRuns_ReadsItsDatabase()
    {
        int port = PolicyServerProcess.FreePort();
        await using var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={Ours}", "--allow-test-time"]);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        await service.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(30));
        await using (var client = await PolicyClient.ConnectAsync(endPoint))
        {
            Assert.StartsWith("DEFER_IF_PERMIT", await client.AskAsync(Requests.Policy(clientAddress: "192.0.2.66", testTime: Fixtures.T0)));
        }

        var (exit, dump, stderr) = Fixtures.Postgrey("export", $"--dbdir={Ours}");

        Assert.True(exit == 0, stderr);
        Assert.Equal("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n 192.0.2.0/a@example.net/b@example.org\n 1700000000,1700000000\nDATA=END\n", dump);
    }

    private sealed class PairComparer : IEqualityComparer<KeyValuePair<byte[], byte[]>>
    {
        public static readonly PairComparer Instance = new();

        public bool Equals(KeyValuePair<byte[], byte[]> x, KeyValuePair<byte[], byte[]> y) => x.Key.AsSpan().SequenceEqual(y.Key) && x.Value.AsSpan().SequenceEqual(y.Value);

        public int GetHashCode(KeyValuePair<byte[], byte[]> obj) => obj.Key.Length;
    }
}
