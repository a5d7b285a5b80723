using System.Text.RegularExpressions;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary>A mail log and the database it goes with, twice: Debian's postgrey's dbdir, and ours
/// made from it by <c>postgrey import</c>. Made once for each test class.</summary>
public sealed class MailLogFixture : IAsyncLifetime
{
    private readonly TempDirectory _dir = new();

    internal MailLog Log { get; private set; } = null!;

    public string Ours => _dir.File("ours");

    public string Clients => _dir.File("clients");

    /// <summary>The log of the trace, and lines a report must pass over: another refusal, an
    /// IPv6 client, a greylisting text without a 450, not a Postfix line.</summary>
    public string LogText { get; private set; } = "";

    public async ValueTask InitializeAsync()
    {
        if (!File.Exists(Fixtures.RealPostgrey) || !File.Exists(ReportTests.Postgreyreport))
        {
            return; // each test says which is missing
        }
        Log = await MailLog.MakeAsync(_dir.File("postgrey"));
        var (exit, _, stderr) = Fixtures.Postgrey("import", $"--from={Log.Dbdir}", $"--dbdir={Ours}");
        Assert.True(exit == 0, stderr);
        LogText = Log.Text()
            + "Nov 14 23:59:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from relay.example[192.0.2.99]: 554 5.7.1 <r@example.org>: Relay access denied; from=<s@example.net> to=<r@example.org> proto=ESMTP helo=<relay.example>\n"
            + "Nov 14 23:59:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from six.example[2001:db8::99]: 450 4.2.0 <r@example.org>: Recipient address rejected: Greylisted; from=<s@example.net> to=<r@example.org> proto=ESMTP helo=<six.example>\n"
            + "Nov 14 23:59:02 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from odd.example[192.0.2.98]: 451 4.3.0 <r@example.org>: Greylisted; from=<s@example.net> to=<r@example.org> proto=ESMTP helo=<odd.example>\n"
            + "this is not a syslog line, reject: Greylisted\n";
        // One of each form: a partial address (its dots match anything), a name suffix, a
        // regular expression, a comment, a blank line and a line that is none of them.
        File.WriteAllText(Clients, "# clients\n192.0.2.1\nexample.com\n/^dyn-[0-9]+-/\n\n  mx.other.example  \nnot a hostname\n");
    }

    public ValueTask DisposeAsync()
    {
        _dir.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// <c>postgrey report</c> on our database against Debian's /usr/bin/postgreyreport on postgrey's:
/// the same mail log, the same options, the same output.
/// </summary>
public sealed class ReportTests(MailLogFixture fixture) : IClassFixture<MailLogFixture>
{
    public const string Postgreyreport = "/usr/bin/postgreyreport";

    /// <summary>postgreyreport's options, spelled as it spells them ({clients}: the client list file).</summary>
    private static readonly Dictionary<string, string[]> OptionSets = new()
    {
        ["defaults"] = [],
        ["tries and time"] = ["--show_tries", "--show_time"],
        ["tab"] = ["--tab", "--show_tries", "--show_time"],
        ["separators"] = ["--separate_by_subnet=====\\n", "--separate_by_ip=\\n"],
        ["ip separator"] = ["--separate_by_ip=--\\n", "--show_tries"],
        ["grouped"] = ["--nosingle_line", "--show_tries", "--separate_by_subnet=:====\\n"],
        ["grouped plain"] = ["--nosingle_line"],
        ["delay 100"] = ["--delay=100"],
        ["delay 0"] = ["--delay=0", "--show_tries"],
        ["delay 1000"] = ["--delay=1000"],
        ["skip clients"] = ["--skip_clients={clients}"],
        ["match clients"] = ["--match_clients={clients}", "--show_tries"],
        ["skip pool"] = ["--skip_pool", "--tab"],
        ["greylist text"] = ["--greylist-text=Recipient address rejected"],
    };

    public static TheoryData<string> Sets => [.. OptionSets.Keys];

    [Theory]
    [MemberData(nameof(Sets))]
    public void Report_SameOutputAsPostgreyreport(string set)
    {
        RequirePrograms();
        string[] options = [.. OptionSets[set].Select(o => o.Replace("{clients}", fixture.Clients, StringComparison.Ordinal))];

        var (theirExit, theirs, theirErrors) = Fixtures.Run(Postgreyreport, [$"--dbdir={fixture.Log.Dbdir}", $"--user={Environment.UserName}", .. options], stdin: fixture.LogText);
        var (ourExit, ours, ourErrors) = Ours(fixture.LogText, ["report", $"--dbdir={fixture.Ours}", .. options]);

        Assert.True(theirExit == 0, theirErrors);
        Assert.True(ourExit == 0, ourErrors);
        Assert.NotEmpty(theirs);
        Assert.Equal(Normalize(theirs), Normalize(ours));
        if (set.EndsWith("clients", StringComparison.Ordinal))
        {
            Assert.Contains($"WARNING: {fixture.Clients} line 7: doesn't look like a hostname", ourErrors);
        }
    }

    /// <summary>What the comparison rests on, checked by hand: the refusals that never passed
    /// are there (also those postgreyreport's own key cannot find), the retried ones not.</summary>
    [Fact]
    public void Report_Defaults_TheTripletsThatNeverCameBack()
    {
        RequirePrograms();
        var (exit, ours, errors) = Ours(fixture.LogText, "report", $"--dbdir={fixture.Ours}", "--show_tries");

        Assert.True(exit == 0, errors);
        string[] lines = ours.Split('\n');
        Assert.Contains(Line(3, "192.0.2.11", "mail2.example.com spam@bad.example r1@example.org"), lines);
        Assert.Contains(Line(1, "192.0.2.11", "mail2.example.com spam2@bad.example r2@example.org"), lines);
        Assert.Contains(Line(2, "192.0.2.13", "fast.example a@b.example r@example.org"), lines); // back after 160 s only
        Assert.Contains(Line(1, "192.0.2.14", "boss.example big.boss@example.com r@example.org"), lines);
        Assert.Contains(Line(1, "192.0.2.14", "boss.example #@numbers.example r@example.org"), lines);
        // Keyed by the address (unknown name, pool): not found, so reported although it passed.
        Assert.Contains(Line(1, "198.51.100.7", "unknown x@y.example r2@example.org"), lines);
        Assert.Contains(Line(1, "203.0.113.46", "mail.pool2.example prvs=#=user@example.com r@example.org"), lines); // no BATV undoing
        Assert.DoesNotContain(lines, l => l.Contains("192.0.2.10 ", StringComparison.Ordinal) || l.Contains("192.0.2.12 ", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.Contains("2001:db8", StringComparison.Ordinal) || l.Contains("192.0.2.9", StringComparison.Ordinal));
    }

    [Fact]
    public void Report_SeveralLogFiles_ReadInTurn()
    {
        RequirePrograms();
        string[] halves = fixture.LogText.Split('\n');
        string first = Path.Combine(fixture.Ours, "..", "first.log"), second = Path.Combine(fixture.Ours, "..", "second.log");
        File.WriteAllText(first, string.Join('\n', halves[..(halves.Length / 2)]) + "\n");
        File.WriteAllText(second, string.Join('\n', halves[(halves.Length / 2)..]));

        var (exit, fromFiles, errors) = Fixtures.Postgrey("report", $"--dbdir={fixture.Ours}", "--show_tries", first, second);
        var (_, fromStdin, _) = Ours(fixture.LogText, "report", $"--dbdir={fixture.Ours}", "--show_tries");

        Assert.True(exit == 0, errors);
        Assert.Equal(fromStdin, fromFiles);
    }

    [Fact]
    public void Report_NoDatabase_ExitsOneWithOneLine()
    {
        string missing = Path.Combine(Path.GetTempPath(), "postgrey-report-missing-" + Guid.NewGuid().ToString("N"));

        var (exit, stdout, stderr) = Ours("", "report", $"--dbdir={missing}");

        Assert.Equal(1, exit);
        Assert.Empty(stdout);
        Assert.Equal($"postgrey report: ERROR: can't find database {missing}/postgrey.sqlite3\n", stderr);
    }

    [Theory]
    [InlineData("--delay=soon")]
    [InlineData("--delay=-5")]
    [InlineData("--greylist-text=(")]
    [InlineData("--check_sender=mx")]
    [InlineData("--db=mysql://x")]
    public void Report_BadUsage_ExitsTwoWithOneLine(string option)
    {
        var (exit, stdout, stderr) = Ours("", "report", option);

        Assert.Equal(2, exit);
        Assert.Empty(stdout);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("postgrey report: ", stderr);
    }

    [Fact]
    public void Report_UnreadableClientList_ExitsOne()
    {
        var (exit, _, stderr) = Ours("", "report", "--skip_clients=/nonexistent/clients");

        Assert.Equal(1, exit);
        Assert.StartsWith("postgrey report: ERROR: ", stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void Report_BadRegexInClientList_ExitsOneWithFileAndLine()
    {
        string file = Path.Combine(Path.GetTempPath(), "postgrey-report-clients-" + Guid.NewGuid().ToString("N"));
        File.WriteAllText(file, "ok.example\n/(unclosed/\n");
        try
        {
            var (exit, _, stderr) = Ours("", "report", $"--match_clients={file}");

            Assert.Equal(1, exit);
            Assert.StartsWith($"postgrey report: ERROR: {file} line 2: bad regular expression /(unclosed/", stderr);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>A --show_tries line as postgreyreport prints it: printf "%s %15s %s %s %s\n".</summary>
    private static string Line(int tries, string address, string rest) => $"{tries} {address,15} {rest}";

    /// <summary>Runs the built postgrey.dll with <paramref name="stdin"/> as its input.</summary>
    internal static (int ExitCode, string Stdout, string Stderr) Ours(string stdin, params string[] args) =>
        Fixtures.Run("dotnet", [BuiltPostgrey.DllPath, .. args], stdin);

    private void RequirePrograms()
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        Requires.Program(Postgreyreport, "postgrey");
        Assert.NotNull(fixture.Log);
    }

    /// <summary>
    /// postgreyreport sorts by client address; among one address's triplets its order is Perl's
    /// hash order, new on every run. So the lines of one address (a line's first a.b.c.d; the
    /// indented sender/recipient lines of --nosingle_line belong to the address above them) are
    /// compared as a sorted run; everything else, separators included, in place.
    /// </summary>
    internal static List<string> Normalize(string output)
    {
        var result = new List<string>();
        var run = new List<string>();
        string? runAddress = null;
        foreach (string line in output.Split('\n'))
        {
            Match address = Regex.Match(line, @"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}");
            string? lineAddress = address.Success ? address.Value
                : line.StartsWith("      ", StringComparison.Ordinal) && runAddress is not null ? runAddress
                : null;
            if (lineAddress is null || lineAddress != runAddress)
            {
                result.AddRange(run.Order(StringComparer.Ordinal));
                run.Clear();
            }
            if (lineAddress is null)
            {
                result.Add(line);
            }
            else
            {
                run.Add(line);
            }
            runAddress = lineAddress;
        }
        result.AddRange(run.Order(StringComparer.Ordinal));
        return result;
    }
}
