using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Whitelists;
using Postgrey.Hosting;
using Postgrey.Testing;

namespace Postgrey.Tests.Attacks;

/// <summary>
/// Attacks on availability, each made for real against the built service as a process: clients
/// that half-close, a HUP storm under load, a regex bomb in a PTR name, a byte trickle, an
/// endless whitelist file. Each checks that other clients are still answered.
/// </summary>
[Trait("Category", "Attack")]
public sealed class AvailabilityAttackTests : IDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";

    /// <summary>Generous: the faults these tests make stalled answers for seconds.</summary>
    private static readonly TimeSpan AnswerBound = TimeSpan.FromSeconds(1);

    private readonly TempDirectory _dir = new();

    public AvailabilityAttackTests()
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    public void Dispose() => _dir.Dispose();

    private async Task<(PolicyServerProcess Server, IPEndPoint EndPoint)> StartAsync(string transport, IReadOnlyDictionary<string, string>? environment = null, params string[] extra)
    {
        int port = PolicyServerProcess.FreePort();
        var env = new Dictionary<string, string>(environment ?? new Dictionary<string, string>()) { ["POSTGREY_TRANSPORT"] = transport };
        PolicyServerProcess server = PostgreyProcess.StartWith(env,
        [
            $"--inet=127.0.0.1:{port}",
            $"--dbdir={_dir.File("db")}",
            .. extra.Any(a => a.StartsWith("--whitelist-clients", StringComparison.Ordinal)) ? Array.Empty<string>() : [$"--whitelist-clients={_dir.File("clients")}"],
            $"--whitelist-recipients={_dir.File("recipients")}",
            .. extra,
        ]);
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        try
        {
            await server.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(60));
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        return (server, endPoint);
    }

    private static async Task<string?> AskAsync(IPEndPoint endPoint, string request, TimeSpan timeout)
    {
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        await client.SendAsync(request);
        return await client.ReadActionAsync(timeout);
    }

    // Item 5: edge-triggered epoll missed a FIN that came with the request; the socket sat in
    // CLOSE-WAIT for the idle time, and --max-connections of them refused everyone else.
    [Theory]
    [InlineData("epoll")]
    [InlineData("sockets")]
    public async Task HalfClosedClients_SixTimesMaxConnections_AreEachAnsweredAndClosed_AndAFreshClientIsServed(string transport)
    {
        var (server, endPoint) = await StartAsync(transport, null, "--max-connections=50");
        await using var _ = server;
        var held = new List<Socket>();
        try
        {
            for (int i = 0; i < 300; i++)
            {
                // The client keeps its socket: only the server can end these connections.
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                held.Add(socket);
                await socket.ConnectAsync(endPoint);
                await socket.SendAsync(Encoding.UTF8.GetBytes(Requests.Policy(sender: $"s{i}@example.net")));
                socket.Shutdown(SocketShutdown.Send);
                string reply = await AvailabilitySockets.ReadToEndAsync(socket, TimeSpan.FromSeconds(10));
                Assert.True(reply == $"action={Greylisted}\n\n", $"client {i} got <{reply}>");
            }
            Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(sender: "fresh@example.net"), TimeSpan.FromSeconds(10)));
            Assert.DoesNotContain(server.Lines, l => l.StartsWith("more than 50 connections", StringComparison.Ordinal));
        }
        finally
        {
            held.ForEach(s => s.Dispose());
        }
    }

    [Theory]
    [InlineData("epoll")]
    [InlineData("sockets")]
    public async Task HalfClosedClient_WithPipelinedRequests_GetsEveryAnswerThenTheClose(string transport)
    {
        var (server, endPoint) = await StartAsync(transport);
        await using var _ = server;
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        await socket.SendAsync(Encoding.UTF8.GetBytes(Requests.Policy(recipient: "a@example.org") + Requests.Policy(recipient: "b@example.org") + Requests.Policy(recipient: "postmaster@example.org")));
        socket.Shutdown(SocketShutdown.Send);
        string reply = await AvailabilitySockets.ReadToEndAsync(socket, TimeSpan.FromSeconds(10));
        Assert.Equal($"action={Greylisted}\n\naction={Greylisted}\n\naction=DUNNO\n\n", reply);
    }

    // Item 6: each HUP blocked a pool thread in a reload; 100 of them stalled answers 6-10 s
    // and a stop 6-9 s.
    [Fact]
    public async Task HupStorm_UnderLoadWithLargeWhitelists_AnswersKeepComing_AndTermStillStops()
    {
        Requires.Linux();
        var clients = new StringBuilder();
        for (int i = 0; i < 200_000; i++)
        {
            clients.Append("mail").Append(i).Append(".example").Append(i % 977).Append(".com\n");
        }
        for (int i = 0; i < 40; i++)
        {
            clients.Append("/^out").Append(i).Append(@"-\d+\.mailer\.example$/").Append('\n');
        }
        _dir.Write("clients", clients.ToString());
        var recipients = new StringBuilder("postmaster@\n");
        for (int i = 0; i < 100_000; i++)
        {
            recipients.Append("user").Append(i).Append("@example").Append(i % 331).Append(".org\n");
        }
        _dir.Write("recipients", recipients.ToString());
        var (server, endPoint) = await StartAsync("epoll");
        await using var _ = server;
        Assert.Equal("DUNNO", await AskAsync(endPoint, Requests.Policy(clientName: $"mail199999.example{199_999 % 977}.com"), TimeSpan.FromSeconds(10)));

        using var stop = new CancellationTokenSource();
        Task[] load = [.. Enumerable.Range(0, 4).Select(c => AvailabilityLoad.RunAsync(endPoint, c, stop.Token))];
        // Three times the others' bound: 100 reloads of 300,000 entries allocate a gigabyte, and
        // beside the whole suite on two cores one probe once waited just over a second for a GC
        // or a core. The defect this guards against stalled answers 6-10 s.
        var probe = new AvailabilityProbe(endPoint, 3 * AnswerBound);
        Task probing = probe.RunAsync(stop.Token);
        try
        {
            for (int i = 0; i < 100; i++)
            {
                server.Signal("HUP");
            }
            // Probe on while the reloads the storm started run, until one has finished.
            await server.WaitForLineAsync(l => l.StartsWith("HUP received", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (server.Lines.Count(l => l.StartsWith("whitelists: 200000 client names", StringComparison.Ordinal)) < 2 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
            Assert.True(server.Lines.Count(l => l.StartsWith("whitelists: 200000 client names", StringComparison.Ordinal)) >= 2, "a reload finished");
            await Task.Delay(500);
        }
        finally
        {
            await stop.CancelAsync();
        }
        await probing; // throws if an answer took longer than the bound
        await Task.WhenAll(load);
        Assert.True(probe.Answered > 10, $"{probe.Answered} probe answers");

        // A stop while reloads may still run or wait.
        for (int i = 0; i < 20; i++)
        {
            server.Signal("HUP");
        }
        server.Signal("TERM");
        await server.WaitForExitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, server.ExitCode);
    }

    [Fact]
    public async Task Reload_ManyWhileOneIsBlocked_ReturnAtOnce_AndMakeOneMoreReload()
    {
        Requires.Linux();
        // A FIFO as the whitelist: reading it blocks the reload until a writer comes.
        string fifo = _dir.File("fifo");
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [fifo]))
        {
            await mkfifo.WaitForExitAsync(TestContext.Current.CancellationToken);
            Assert.Equal(0, mkfifo.ExitCode);
        }
        var logs = new CapturingLoggerProvider();
        using var loggerFactory = new Microsoft.Extensions.Logging.LoggerFactory([logs]);
        var files = new WhitelistFiles([fifo], [_dir.File("recipients")], loggerFactory.CreateLogger<WhitelistFiles>());
        var provider = new WhitelistProvider(WhitelistSet.Empty);
        var reloader = new WhitelistReloader(files, provider, loggerFactory.CreateLogger<WhitelistReloader>());

        // As the signal handler calls it: on pool threads, 100 times.
        await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => Task.Run(reloader.Reload))).WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);

        await File.WriteAllTextAsync(fifo, "first.example\n", TestContext.Current.CancellationToken); // the first reload reads this
        await WaitUntilAsync(() => provider.Current.Clients.MatchesName("first.example")); // and has closed the FIFO
        await File.WriteAllTextAsync(fifo, "second.example\n", TestContext.Current.CancellationToken); // the one that waited
        await WaitUntilAsync(() => provider.Current.Clients.MatchesName("second.example"));
        Assert.False(provider.Current.Clients.MatchesName("first.example"));
        await Task.Delay(300, TestContext.Current.CancellationToken); // a third would block on the FIFO and never log "whitelists:"
        Assert.Equal(2, logs.Messages().Count(m => m == "HUP received: reloading whitelists..."));
        Assert.Equal(2, logs.Messages().Count(m => m.StartsWith("whitelists: 1 client names", StringComparison.Ordinal)));
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (int i = 0; i < 400 && !condition(); i++)
        {
            await Task.Delay(25, TestContext.Current.CancellationToken);
        }
        Assert.True(condition());
    }

    // Item 7: /^(a+)+$/ cost the loop 100 ms per request against a crafted PTR name.
    [Theory]
    [InlineData("epoll")]
    [InlineData("sockets")]
    public async Task RegexBomb_CraftedClientNames_DoNotDelayOtherClients(string transport)
    {
        _dir.Write("clients", "# a whitelist entry as admins write them\n/^(a+)+$/\n");
        var (server, endPoint) = await StartAsync(transport);
        await using var _ = server;
        string crafted = new string('a', 40) + ".attacker.example";
        var attackers = new List<PolicyClient>();
        try
        {
            for (int c = 0; c < 5; c++)
            {
                var attacker = await PolicyClient.ConnectAsync(endPoint);
                attackers.Add(attacker);
                await attacker.SendAsync(string.Concat(Enumerable.Range(0, 10).Select(i => Requests.Policy(clientName: crafted, sender: $"x{c}.{i}@attacker.example"))));
            }
            Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(sender: "fresh@example.net"), AnswerBound));
            foreach (PolicyClient attacker in attackers)
            {
                for (int i = 0; i < 10; i++)
                {
                    Assert.StartsWith("DEFER_IF_PERMIT", await attacker.ReadActionAsync(TimeSpan.FromSeconds(30)), StringComparison.Ordinal);
                }
            }
        }
        finally
        {
            foreach (PolicyClient attacker in attackers)
            {
                await attacker.DisposeAsync();
            }
        }
        Assert.DoesNotContain(server.Lines, l => l.Contains("timed out", StringComparison.Ordinal));
        Assert.Equal("DUNNO", await AskAsync(endPoint, Requests.Policy(clientName: new string('a', 300)), TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task RegexNeedingBacktracking_IsWarnedWithFileAndLine_AndItsTimeoutSaidOnce()
    {
        string clients = _dir.File("clients");
        _dir.Write("clients", "mx.example.net\n/^(?=a)(a+)+$/\n");
        var (server, endPoint) = await StartAsync("epoll");
        await using var _ = server;
        await server.WaitForLineAsync(l => l.StartsWith($"{clients} line 2: regex needs the backtracking engine", StringComparison.Ordinal));
        string crafted = new string('a', 200) + "!";
        for (int i = 0; i < 5; i++)
        {
            Assert.StartsWith("DEFER_IF_PERMIT", await AskAsync(endPoint, Requests.Policy(clientName: crafted, sender: $"s{i}@example.net"), TimeSpan.FromSeconds(10)), StringComparison.Ordinal);
        }
        string timeout = $"{clients} line 2: regex timed out after 10 ms and counts as no match (said once per entry)";
        await server.WaitForLineAsync(l => l == timeout);
        Assert.Single(server.Lines, l => l == timeout);
    }

    // Item 10: every byte re-armed the idle timer: one a minute kept a connection forever.
    [Theory]
    [InlineData("epoll")]
    [InlineData("sockets")]
    public async Task ByteTrickle_NeverARequest_IsClosedAfterTheIdleTime(string transport)
    {
        var env = new Dictionary<string, string> { ["POSTGREY_TEST_IDLE_TIMEOUT_MS"] = "1500" };
        var (server, endPoint) = await StartAsync(transport, env);
        await using var _ = server;
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        byte[] request = Encoding.UTF8.GetBytes(Requests.Policy());
        bool closed = false;
        // One byte each 200 ms: far less than the idle time between two bytes, and 20 s
        // (13 idle times) to send no more than 100 bytes of a request.
        for (int i = 0; i < 100 && !closed; i++)
        {
            try
            {
                await socket.SendAsync(request.AsMemory(i, 1));
            }
            catch (SocketException)
            {
                closed = true; // reset: closed before
                break;
            }
            closed = await AvailabilitySockets.IsClosedAsync(socket, TimeSpan.FromMilliseconds(200));
        }
        Assert.True(closed, "the trickling connection is still open after 20 s");

        // A client that asks in time is answered, and may wait up to the idle time between requests.
        await using var client = await PolicyClient.ConnectAsync(endPoint);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
        await Task.Delay(500);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy(sender: "second@example.net")));
    }

    // Item 11: a whitelist path of /dev/zero was read into one endless line.
    [Fact]
    public async Task DevZeroAsWhitelist_IsNotUsedWithAWarning_AndTheServiceServes()
    {
        Requires.Linux();
        var (server, endPoint) = await StartAsync("epoll", null, "--whitelist-clients=/dev/zero");
        await using var _ = server;
        await server.WaitForLineAsync(l => l.StartsWith("/dev/zero: larger than 32 MiB: not used", StringComparison.Ordinal));
        Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(), TimeSpan.FromSeconds(10)));

        server.Signal("HUP");
        await server.WaitForLineAsync(l => l.StartsWith("whitelists not reloaded", StringComparison.Ordinal));
        Assert.Equal(2, server.Lines.Count(l => l.StartsWith("/dev/zero: larger than 32 MiB: not used", StringComparison.Ordinal)));
        Assert.Equal(Greylisted, await AskAsync(endPoint, Requests.Policy(sender: "second@example.net"), TimeSpan.FromSeconds(10)));

        long rssKiB = long.Parse(
            File.ReadAllLines($"/proc/{server.Pid}/status").Single(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
            CultureInfo.InvariantCulture);
        Assert.True(rssKiB < 400 * 1024, $"resident {rssKiB} KiB");
    }
}
