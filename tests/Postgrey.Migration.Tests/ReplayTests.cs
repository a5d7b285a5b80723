using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary>
/// <c>postgrey replay</c> into our running service: the mail log of a trace Debian's postgrey
/// answered, replayed with its times, leaves our database as postgrey's (the same triplets,
/// first and last seen, and auto-whitelist counts), and our answers are postgrey's.
/// </summary>
public sealed class ReplayTests(MailLogFixture fixture) : IClassFixture<MailLogFixture>, IDisposable
{
    /// <summary>Lines a replay must count and pass over: no syslog line, a NOQUEUE line that is no
    /// RCPT reject; and one it must ignore without counting (not Postfix's).</summary>
    private const string BadLines =
        "garbage that is no syslog line\n"
        + "Nov 14 22:13:21 mx postfix/smtpd[1]: NOQUEUE: reject: CONNECT from odd.example[192.0.2.98]: 554 5.7.1 go away\n"
        + "Nov 14 22:13:22 mx sshd[7]: Accepted publickey for root from 192.0.2.1 port 22\n";

    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Replay_TraceLog_OurDatabaseAndAnswersAsPostgreys(bool rfc3339)
    {
        RequirePostgrey();
        string ours = _dir.File("ours");
        string log = _dir.Write("mail.log", BadLines + fixture.Log.Text(rfc3339));
        int port = PolicyServerProcess.FreePort();
        (int Exit, string Stdout, string Stderr) replay;
        await using (var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--dbdir={ours}", "--allow-test-time"]))
        {
            await service.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

            // The syslog stamps are UTC: the replay reads them in TZ's local time.
            replay = Fixtures.Run("/usr/bin/env", ["TZ=UTC", "dotnet", BuiltPostgrey.DllPath, "replay", log, $"--inet=127.0.0.1:{port}", "--year=2023"]);
        }

        Assert.True(replay.Exit == 0, replay.Stderr);
        string[] lines = replay.Stdout.TrimEnd('\n').Split('\n');
        Assert.Matches($@"^{fixture.Log.Attempts.Count} requests in [0-9.]+ s, [0-9]+ requests/s$", lines[0]);
        var postgreys = fixture.Log.Answers.GroupBy(a => a.Split(' ')[0]).OrderByDescending(g => g.Count())
            .Select(g => string.Create(CultureInfo.InvariantCulture, $"{g.Count(),10} {g.Key}"));
        Assert.Equal(postgreys, lines[1..^1]);
        Assert.Equal("2 lines skipped: not syslog lines, or Postfix NOQUEUE lines that are not a RCPT reject", lines[^1]);
        Assert.Contains("line 1 skipped: not a syslog line", replay.Stderr, StringComparison.Ordinal);
        Assert.Contains("line 2 skipped: a Postfix NOQUEUE line", replay.Stderr, StringComparison.Ordinal);

        var (triplets, clients) = Fixtures.OurRows(ours);
        Assert.Equal(Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(fixture.Log.Dbdir, PostgreyDatabase.TripletsFileName))), triplets);
        Assert.Equal(Fixtures.ExpectedRows(Fixtures.DbDumpPairs(Path.Combine(fixture.Log.Dbdir, PostgreyDatabase.ClientsFileName))), clients);
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"192.0.2.0/s1@example.net/r1@example.org {Fixtures.T0},{Fixtures.T0 + 400}"), triplets);
    }

    /// <summary>The two commands on the shared store: the log replayed into our service on
    /// PostgreSQL, then <c>postgrey report --db</c> reads what postgreyreport reads in postgrey's.</summary>
    [Fact]
    public async Task ReplayThenReport_OnPostgreSql_ReportAsOnPostgreysDatabase()
    {
        RequirePostgrey();
        PostgresCluster.Require();
        await using var cluster = new PostgresCluster();
        string uri = cluster.SocketUri(await cluster.CreateDatabaseAsync());
        string log = _dir.Write("mail.log", fixture.LogText);
        int port = PolicyServerProcess.FreePort();
        await using (var service = BuiltPostgrey.Start([$"--inet=127.0.0.1:{port}", $"--db={uri}", $"--dbdir={_dir.File("run")}", "--allow-test-time"]))
        {
            await service.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
            var replay = Fixtures.Run("/usr/bin/env", ["TZ=UTC", "dotnet", BuiltPostgrey.DllPath, "replay", log, $"--inet=127.0.0.1:{port}", "--year=2023"]);
            Assert.True(replay.ExitCode == 0, replay.Stderr);
        }

        var (exit, ours, errors) = ReportTests.Ours(fixture.LogText, "report", $"--db={uri}", "--show_tries");
        var (theirExit, theirs, theirErrors) = Fixtures.Run(ReportTests.Postgreyreport, [$"--dbdir={fixture.Log.Dbdir}", $"--user={Environment.UserName}", "--show_tries"], stdin: fixture.LogText);

        Assert.True(exit == 0, errors);
        Assert.True(theirExit == 0, theirErrors);
        Assert.Equal(ReportTests.Normalize(theirs), ReportTests.Normalize(ours));
    }

    [Fact]
    public async Task Replay_OverUnixSocket_FromStandardInput()
    {
        string ours = _dir.File("ours");
        string socket = _dir.File("policy.sock");
        string log =
            $"{MailLog.Stamp(Fixtures.T0, rfc3339: true)} mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a.example[192.0.2.5]: 450 4.2.0 <r@example.org>: Recipient address rejected: Greylisted; from=<s@example.net> to=<r@example.org> proto=ESMTP helo=<a.example>\n"
            + $"{MailLog.Stamp(Fixtures.T0 + 600, rfc3339: true)} mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a.example[192.0.2.5]: 450 4.2.0 <r@example.org>: Recipient address rejected: Greylisted; from=<s@example.net> to=<r@example.org> proto=ESMTP helo=<a.example>\n";
        (int Exit, string Stdout, string Stderr) replay;
        await using (var service = BuiltPostgrey.Start([$"--unix={socket}", $"--dbdir={ours}", "--allow-test-time"]))
        {
            await service.WaitUntilListeningAsync(new UnixDomainSocketEndPoint(socket), TimeSpan.FromSeconds(30));
            replay = ReportTests.Ours(log, "replay", "-", $"--unix={socket}");
        }

        Assert.True(replay.Exit == 0, replay.Stderr);
        string[] lines = replay.Stdout.TrimEnd('\n').Split('\n');
        Assert.StartsWith("2 requests in ", lines[0]);
        Assert.Equal(["         1 DEFER_IF_PERMIT", "         1 PREPEND"], lines[1..]);
        Assert.Equal([string.Create(CultureInfo.InvariantCulture, $"192.0.2.0/s@example.net/r@example.org {Fixtures.T0},{Fixtures.T0 + 600}")], Fixtures.OurRows(ours).Triplets);
    }

    [Theory]
    [InlineData("mail.log")]
    [InlineData("mail.log", "--inet=127.0.0.1:10023", "--unix=/run/x")]
    [InlineData("mail.log", "--inet=localhost")]
    [InlineData("mail.log", "--inet=127.0.0.1:99999")]
    [InlineData("--inet=127.0.0.1:10023")]
    [InlineData("mail.log", "--inet=127.0.0.1:10023", "--year=soon")]
    [InlineData("--verbose", "--inet=127.0.0.1:10023")]
    public void Replay_BadUsage_ExitsTwoWithOneLine(params string[] args)
    {
        var (exit, stdout, stderr) = Fixtures.Postgrey(["replay", .. args]);

        Assert.Equal(2, exit);
        Assert.Empty(stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("postgrey replay: ", stderr);
    }

    [Fact]
    public void Replay_NoServer_ExitsOneWithOneLine()
    {
        string log = _dir.Write("mail.log", "");
        int port = PolicyServerProcess.FreePort();

        var (exit, stdout, stderr) = Fixtures.Postgrey("replay", log, $"--inet=127.0.0.1:{port}");

        Assert.Equal(1, exit);
        Assert.Empty(stdout);
        Assert.StartsWith($"postgrey replay: ERROR: can't connect to 127.0.0.1:{port}: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Replay_NoLogFile_ExitsOneWithOneLine()
    {
        var (exit, _, stderr) = Fixtures.Postgrey("replay", _dir.File("missing.log"), "--inet=127.0.0.1:10023");

        Assert.Equal(1, exit);
        Assert.StartsWith($"postgrey replay: ERROR: can't read {_dir.File("missing.log")}: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    private void RequirePostgrey()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        Requires.Program(ReportTests.Postgreyreport, "postgrey");
        Assert.NotNull(fixture.Log);
    }
}
