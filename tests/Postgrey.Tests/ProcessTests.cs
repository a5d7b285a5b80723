using System.Net.Sockets;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>The service started as a real process and spoken to over real sockets.</summary>
public sealed class ProcessTests : IDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private readonly TempDirectory _dir = new();

    private string[] Args(params string[] extra) =>
    [
        "--inet=127.0.0.1:0",
        $"--dbdir={_dir.File("db")}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        .. extra,
    ];

    public ProcessTests()
    {
        _dir.Write("clients", "# none yet\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    [Fact]
    public async Task Version_PrintsPostgreysVersion()
    {
        var (code, output) = await PostgreyProcess.RunAsync("--version");
        Assert.Equal(0, code);
        Assert.StartsWith("postgrey 1.37 (Postgrey for .NET ", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ListsTheFlags()
    {
        var (code, output) = await PostgreyProcess.RunAsync("--help");
        Assert.Equal(0, code);
        Assert.Contains("--delay", output, StringComparison.Ordinal);
        Assert.Contains("--whitelist-clients", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ERROR: --unix or --inet must be specified", "--delay=60")]
    [InlineData("ERROR: --delay=abc: a whole number is expected", "--inet=10023", "--delay=abc")]
    [InlineData("ERROR: --retry-window=3x: must be either a number of days or a number followed by 'h' for hours ('6h' for example)", "--inet=10023", "--retry-window=3x")]
    public async Task BadFlags_PrintErrorAndExit1BeforeStarting(string error, params string[] args)
    {
        var (code, output) = await PostgreyProcess.RunAsync(args);
        Assert.Equal(1, code);
        Assert.Contains(error, output.Split('\n'));
        Assert.DoesNotContain("listening", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TcpAndUnix_BothServe()
    {
        string socket = _dir.File("p.sock");
        await using var server = PostgreyProcess.Start(Args($"--unix={socket}"));
        var tcp = await server.WaitForTcpAsync();
        await server.WaitForUnixAsync(socket);
        await using var overTcp = await PolicyClient.ConnectAsync(tcp);
        await using var overUnix = await PolicyClient.ConnectAsync(new UnixDomainSocketEndPoint(socket));
        Assert.Equal(Greylisted, await overTcp.AskAsync(Requests.Policy()));
        Assert.Equal(Greylisted, await overUnix.AskAsync(Requests.Policy(recipient: "other@example.org")));
        Assert.Equal("DUNNO", await overUnix.AskAsync(Requests.Policy(recipient: "postmaster@example.org")));
        await server.WaitForLineAsync(l => l == "action=greylist, reason=new, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org");
    }

    [Fact]
    public async Task SecondInstanceOnTheSameDbdir_ExitsLocked()
    {
        await using var first = PostgreyProcess.Start(Args());
        await first.WaitForTcpAsync();
        var (code, output) = await PostgreyProcess.RunAsync(Args());
        Assert.Equal(1, code);
        Assert.Contains($"ERROR: locked: {_dir.File("db")}/postgrey.lock", output.Split('\n'));
    }

    [Fact]
    public async Task PortInUse_ExitsWithAnErrorAndReleasesTheLock()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        taken.Listen();
        int port = ((System.Net.IPEndPoint)taken.LocalEndPoint!).Port;
        var (code, output) = await PostgreyProcess.RunAsync([.. Args().Where(a => !a.StartsWith("--inet", StringComparison.Ordinal)), $"--inet=127.0.0.1:{port}"]);
        Assert.Equal(1, code);
        Assert.Contains($"ERROR: can't bind to 127.0.0.1:{port}: Address already in use", output.Split('\n'));
        await using var next = PostgreyProcess.Start(Args());
        await next.WaitForTcpAsync(); // the database and its lock were released
    }

    [Fact]
    public async Task Sighup_ReloadsTheWhitelists()
    {
        await using var server = PostgreyProcess.Start(Args());
        var tcp = await server.WaitForTcpAsync();
        await using var client = await PolicyClient.ConnectAsync(tcp);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));

        _dir.Write("clients", "example.net\n");
        server.Signal("HUP");
        await server.WaitForLineAsync(l => l == "HUP received: reloading whitelists...");
        await server.WaitForLineAsync(l => l.StartsWith("whitelists: 1 client names", StringComparison.Ordinal));

        Assert.Equal("DUNNO", await client.AskAsync(Requests.Policy()));
        Assert.False(server.HasExited);
    }

    [Fact]
    public async Task Sighup_WithAnUnreadableFile_KeepsTheOldLists()
    {
        _dir.Write("clients", "example.net\n");
        await using var server = PostgreyProcess.Start(Args());
        var tcp = await server.WaitForTcpAsync();
        File.Delete(_dir.File("clients"));
        server.Signal("HUP");
        await server.WaitForLineAsync(l => l.StartsWith("whitelists not reloaded", StringComparison.Ordinal));
        await using var client = await PolicyClient.ConnectAsync(tcp);
        Assert.Equal("DUNNO", await client.AskAsync(Requests.Policy()));
    }

    [Fact]
    public async Task BadWhitelistLine_IsWarnedWithFileAndLine()
    {
        _dir.Write("clients", "ok.example\nnot a name\n");
        await using var server = PostgreyProcess.Start(Args());
        await server.WaitForTcpAsync();
        await server.WaitForLineAsync(l => l == $"{_dir.File("clients")} line 2: doesn't look like a hostname");
    }

    [Fact]
    public async Task Sigterm_StopsCleanlyAndReleasesTheLock()
    {
        await using (var server = PostgreyProcess.Start(Args()))
        {
            await server.WaitForTcpAsync();
            server.Signal("TERM");
            await server.WaitForExitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(0, server.ExitCode);
        }
        await using var again = PostgreyProcess.Start(Args());
        await again.WaitForTcpAsync();
    }

    /// <summary>
    /// kill -9 while 20 connections keep asking: every triplet that got an answer must be in the
    /// database after a restart. With --delay=60 and test times, a stored triplet asked again 61 s
    /// "later" passes (PREPEND); a lost one would be greylisted as new.
    /// </summary>
    [Fact]
    public async Task KillDashNineUnderLoad_LosesNoAnsweredDecision()
    {
        const long t0 = 1_700_000_000;
        var answered = new System.Collections.Concurrent.ConcurrentBag<string>();
        await using var server = PostgreyProcess.Start(Args("--delay=60", "--allow-test-time"));
        var tcp = await server.WaitForTcpAsync();
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 20).Select(c => Task.Run(async () =>
        {
            try
            {
                await using var client = await PolicyClient.ConnectAsync(tcp);
                for (int i = 0; !stop.IsCancellationRequested; i++)
                {
                    string sender = $"c{c}-n{i}x@example.net";
                    string? action = await client.AskAsync(Requests.Policy(sender: sender, testTime: t0));
                    if (action is null)
                    {
                        return;
                    }
                    Assert.StartsWith("DEFER_IF_PERMIT", action, StringComparison.Ordinal);
                    answered.Add(sender);
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException)
            {
                // the server died mid-request: that request was not answered
            }
        })).ToArray();

        while (answered.Count < 2000)
        {
            await Task.Delay(10);
        }
        server.KillHard();
        await stop.CancelAsync();
        await Task.WhenAll(load);
        await server.WaitForExitAsync(TimeSpan.FromSeconds(15));

        await using var restarted = PostgreyProcess.Start(Args("--delay=60", "--allow-test-time"));
        var again = await restarted.WaitForTcpAsync();
        await using var checker = await PolicyClient.ConnectAsync(again);
        int lost = 0;
        foreach (string sender in answered)
        {
            string? action = await checker.AskAsync(Requests.Policy(sender: sender, testTime: t0 + 61, instance: sender));
            if (!action!.StartsWith("PREPEND", StringComparison.Ordinal))
            {
                lost++;
            }
        }
        Assert.Equal(0, lost);
        Assert.True(answered.Count >= 2000);
    }

    [Fact]
    public async Task Quiet_HidesTheActionLinesButNotTheWarnings()
    {
        await using var server = PostgreyProcess.Start(Args("-q", "--unix=" + _dir.File("q.sock")));
        await Task.Delay(100);
        await using var client = await WaitAndConnectAsync(_dir.File("q.sock"));
        Assert.Equal(Greylisted, await client.AskAsync("junk line\n" + Requests.Policy()));
        await server.WaitForLineAsync(l => l == "ignoring garbage: <junk line>");
        Assert.DoesNotContain(server.Lines, l => l.StartsWith("action=", StringComparison.Ordinal));
    }

    [Fact]
    public async Task EightBitSender_IsLoggedAsPostgreyLogsIt()
    {
        await using var server = PostgreyProcess.Start(Args());
        await using var client = await PolicyClient.ConnectAsync(await server.WaitForTcpAsync());
        await client.AskAsync(Requests.Policy(sender: "jörg@exämple.net"));
        await server.WaitForLineAsync(l => l.Contains("sender=j%C3%B6rg@ex%C3%A4mple.net,", StringComparison.Ordinal));
    }

    [Fact]
    public async Task MaintenanceInterval_RunsTheCleaning()
    {
        await using var server = PostgreyProcess.Start(Args("--maintenance-interval=1"));
        await using var client = await PolicyClient.ConnectAsync(await server.WaitForTcpAsync());
        await client.AskAsync(Requests.Policy());
        await server.WaitForLineAsync(l => l == "cleaning main database finished. before: 1, after: 1");
        await server.WaitForLineAsync(l => l == "cleaning clients database finished. before: 0, after: 0");
    }

    private static async Task<PolicyClient> WaitAndConnectAsync(string socket)
    {
        for (int i = 0; ; i++)
        {
            try
            {
                return await PolicyClient.ConnectAsync(new UnixDomainSocketEndPoint(socket));
            }
            catch (SocketException) when (i < 300)
            {
                await Task.Delay(50);
            }
        }
    }

    public void Dispose() => _dir.Dispose();
}
