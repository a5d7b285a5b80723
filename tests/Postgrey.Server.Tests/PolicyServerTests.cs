using System.Net.Sockets;
using System.Text;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Testing;

namespace Postgrey.Server.Tests;

/// <summary>The server over real TCP and Unix sockets, once per transport (below).</summary>
public abstract class PolicyServerTests
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";

    private protected abstract PolicyTransport Transport { get; }

    private Task<ServerHarness> StartAsync(Func<ServerOptions, ServerOptions>? configure = null, GreylistOptions? greylist = null) =>
        ServerHarness.StartAsync(o => (configure?.Invoke(o) ?? o) with { Transport = Transport }, greylist);

    [Fact]
    public async Task Tcp_ManyRequestsOnOneConnection_AreAllAnswered()
    {
        await using var h = await StartAsync();
        await using var client = await h.ConnectAsync();
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy(recipient: $"r{i}@example.org")));
        }
    }

    [Fact]
    public async Task Unix_AnswersAndAppliesTheSocketMode()
    {
        var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;
        await using var h = await StartAsync(o => o with { SocketMode = mode });
        Assert.Equal(mode, File.GetUnixFileMode(h.SocketPath));
        await using var client = await h.ConnectAsync(unix: true);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
    }

    [Fact]
    public async Task Unix_StaleSocketFile_IsReplacedAndRemovedOnStop()
    {
        var dir = new TempDirectory();
        string path = dir.File("stale.sock");
        // Bound, never listening: what a crashed server leaves behind. (Disposing it would
        // remove the file, so it stays open until the end.)
        using var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        dead.Bind(new UnixDomainSocketEndPoint(path));
        Assert.True(File.Exists(path));
        var h = await StartAsync(o => o with { Unix = [path] });
        await using (var client = await h.ConnectAsync(unix: true))
        {
            Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
        }
        await h.DisposeAsync();
        Assert.False(File.Exists(path));
        dir.Dispose();
    }

    [Fact]
    public async Task Unix_SocketOfARunningServer_IsNotStolen()
    {
        await using var h = await StartAsync();
        var second = await Assert.ThrowsAsync<IOException>(() => StartAsync(o => o with { Inet = [], Unix = [h.SocketPath] }));
        Assert.Contains("in use", second.Message, StringComparison.Ordinal);
        await using var client = await h.ConnectAsync(unix: true);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
    }

    [Fact]
    public async Task ConcurrentConnections_AreAllServed()
    {
        await using var h = await StartAsync();
        var tasks = Enumerable.Range(0, 50).Select(async c =>
        {
            await using var client = await h.ConnectAsync(unix: c % 2 == 0);
            for (int i = 0; i < 20; i++)
            {
                string? action = await client.AskAsync(Requests.Policy(sender: $"s{c}@example.net", recipient: $"r{i}@example.org"));
                Assert.StartsWith("DEFER_IF_PERMIT 4.2.0 Greylisted", action, StringComparison.Ordinal);
            }
        });
        await Task.WhenAll(tasks);
        Assert.Equal(1000, h.Logs.Messages(GreylistEngine.DecisionLogCategory).Count(m => m.StartsWith("action=greylist, reason=new", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task ConcurrentFirstRequestsForOneTriplet_OnlyOneIsNew()
    {
        await using var h = await StartAsync(greylist: new GreylistOptions { DelaySeconds = 0 });
        var answers = await Task.WhenAll(Enumerable.Range(0, 40).Select(async _ =>
        {
            await using var client = await h.ConnectAsync();
            return await client.AskAsync(Requests.Policy(instance: Guid.NewGuid().ToString()));
        }));
        // With --delay=0 the first sighting passes with the header; every later one finds a
        // successful triplet and answers DUNNO. Two "first" sightings would give two headers.
        Assert.Single(answers, a => a!.StartsWith("PREPEND", StringComparison.Ordinal));
        Assert.Equal(39, answers.Count(a => a == "DUNNO"));
    }

    [Fact]
    public async Task DecisionLines_AreNeverWrittenOnTheDatabaseWritersThread()
    {
        // A full log queue or a slow formatter must never stall the group commits: the writer
        // only hands a commit back, and the answer and its line are made elsewhere.
        await using var h = await StartAsync();
        await using var client = await h.ConnectAsync(unix: true);
        for (int i = 0; i < 50; i++)
        {
            Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy(recipient: $"r{i}@example.org")));
        }
        Assert.Equal(50, h.DecisionThreads.Names.Count);
        Assert.DoesNotContain("postgrey-db-writer", h.DecisionThreads.Names);
        if (Transport == PolicyTransport.Epoll)
        {
            Assert.All(h.DecisionThreads.Names, n => Assert.Equal("postgrey-epoll", n));
        }
    }

    [Fact]
    public async Task PipelinedRequests_AreAnsweredInOrder()
    {
        await using var h = await StartAsync(greylist: new GreylistOptions { DelaySeconds = 0 });
        await using var client = await h.ConnectAsync();
        await client.SendAsync(Requests.Policy(recipient: "a@x") + Requests.Policy(recipient: "a@x", instance: "2") + Requests.Policy(request: "junk"));
        Assert.StartsWith("PREPEND", await client.ReadActionAsync(), StringComparison.Ordinal);
        Assert.Equal("DUNNO", await client.ReadActionAsync());
        Assert.Equal("DUNNO", await client.ReadActionAsync());
    }

    [Fact]
    public async Task Exim_ClosesAfterEachAnswer()
    {
        await using var h = await StartAsync(o => o with { Exim = true });
        await using var client = await h.ConnectAsync();
        await client.SendAsync(Requests.Policy() + Requests.Policy());
        Assert.Equal(Greylisted, await client.ReadActionAsync());
        Assert.Null(await client.ReadActionAsync());
    }

    [Fact]
    public async Task OverlongLine_ClosesThatConnectionOnly()
    {
        await using var h = await StartAsync(o => o with { Limits = new PolicyLimits { MaxLineBytes = 1024 } });
        await using var good = await h.ConnectAsync();
        await using var bad = await h.ConnectAsync();
        await bad.SendAsync("client_name=" + new string('x', 5000));
        Assert.True(await bad.IsClosedByServerAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(Greylisted, await good.AskAsync(Requests.Policy()));
        Assert.Contains(h.Logs.Messages(), m => m.Contains("sent a line longer than 1024 bytes; closing the connection", StringComparison.Ordinal));
    }

    [Fact]
    public async Task TooManyAttributes_ClosesTheConnection()
    {
        await using var h = await StartAsync(o => o with { Limits = new PolicyLimits { MaxAttributesPerRequest = 50 } });
        await using var client = await h.ConnectAsync();
        await client.SendAsync(string.Concat(Enumerable.Range(0, 100).Select(i => $"a{i}=v\n")));
        Assert.True(await client.IsClosedByServerAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task HalfARequestThenDisconnect_LeavesTheServerServing()
    {
        await using var h = await StartAsync();
        await using (var quitter = await h.ConnectAsync())
        {
            await quitter.SendAsync("request=smtpd_access_policy\nclient_address=192.0.2.1\nrecip");
        }
        await using var client = await h.ConnectAsync();
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
    }

    [Fact]
    public async Task GarbageAndEightBitBytes_AreSurvived()
    {
        await using var h = await StartAsync();
        await using var client = await h.ConnectAsync();
        byte[] junk = [.. "no equals sign here\n"u8, 0xff, 0xfe, 0x00, 0x80, (byte)'\n', .. "client_name=\u00e9\u00ff\n"u8];
        await client.SendAsync(junk);
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy(sender: "j\u00f6rg@ex\u00e4mple.net")));
        Assert.Contains("ignoring garbage: <no equals sign here>", h.Logs.Messages());
    }

    [Fact]
    public async Task IdleConnection_IsClosedAfterTheIdleTimeout()
    {
        await using var h = await StartAsync(o => o with { Limits = new PolicyLimits { IdleTimeout = TimeSpan.FromMilliseconds(300) } });
        await using var client = await h.ConnectAsync();
        Assert.True(await client.IsClosedByServerAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task ByteTrickle_WithoutARequest_IsClosedAfterTheIdleTimeout()
    {
        await using var h = await StartAsync(o => o with { Limits = new PolicyLimits { IdleTimeout = TimeSpan.FromMilliseconds(600) } });
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(h.Tcp);
        byte[] request = Encoding.UTF8.GetBytes(Requests.Policy());
        bool closed = false;
        // A byte every 100 ms, far within the idle time, for 10 s: never a whole request.
        for (int i = 0; i < 100 && !closed; i++)
        {
            try
            {
                await socket.SendAsync(request.AsMemory(i, 1));
                using var wait = new CancellationTokenSource(100);
                closed = await socket.ReceiveAsync(new byte[16], SocketFlags.None, wait.Token) == 0;
            }
            catch (OperationCanceledException)
            {
            }
            catch (SocketException)
            {
                closed = true;
            }
        }
        Assert.True(closed);
    }

    [Fact]
    public async Task HalfClosedClient_IsAnsweredThenClosed()
    {
        await using var h = await StartAsync(o => o with { MaxConnections = 2 });
        for (int i = 0; i < 6; i++)
        {
            // The FIN comes with the request; the client keeps its socket.
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(h.Unix);
            await socket.SendAsync(Encoding.UTF8.GetBytes(Requests.Policy(sender: $"s{i}@example.net")));
            socket.Shutdown(SocketShutdown.Send);
            var received = new MemoryStream();
            byte[] buffer = new byte[1024];
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, limit.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
            Assert.Equal($"action={Greylisted}\n\n", Encoding.UTF8.GetString(received.ToArray()));
        }
    }

    [Fact]
    public async Task OverTheConnectionLimit_NewConnectionsAreClosed()
    {
        await using var h = await StartAsync(o => o with { MaxConnections = 2 });
        await using var a = await h.ConnectAsync();
        await using var b = await h.ConnectAsync();
        Assert.Equal(Greylisted, await a.AskAsync(Requests.Policy()));
        Assert.Equal(Greylisted, await b.AskAsync(Requests.Policy()));
        await using var c = await h.ConnectAsync();
        Assert.True(await c.IsClosedByServerAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains(h.Logs.Messages(), m => m.StartsWith("more than 2 connections", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Stop_AnswersTheRequestInFlightThenCloses()
    {
        var h = await StartAsync();
        await using var client = await h.ConnectAsync();
        await client.AskAsync(Requests.Policy()); // the connection is established and served
        byte[] request = Encoding.UTF8.GetBytes(Requests.Policy(recipient: "last@example.org"));
        await client.SendAsync(request);
        string? answer = await client.ReadActionAsync();
        await h.DisposeAsync();
        Assert.StartsWith("DEFER_IF_PERMIT", answer, StringComparison.Ordinal);
        Assert.True(await client.IsClosedByServerAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task ManyPipelinedRequestsNotRead_AreAnsweredInOrderOnceTheClientReads()
    {
        // Far more answers than the socket buffers hold: the server must wait for room to
        // send, without reading on, and go on when the client reads.
        await using var h = await StartAsync();
        await using var client = await h.ConnectAsync(unix: true);
        const int count = 3000;
        var batch = new StringBuilder();
        for (int i = 0; i < count; i++)
        {
            batch.Append(Requests.Policy(recipient: $"r{i}@example.org"));
        }
        Task send = client.SendAsync(batch.ToString());
        await Task.Delay(500);
        for (int i = 0; i < count; i++)
        {
            Assert.Equal(Greylisted, await client.ReadActionAsync());
        }
        await send.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(count, h.Logs.Messages(GreylistEngine.DecisionLogCategory).Count(m => m.StartsWith("action=greylist, reason=new", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task LongRequestInSmallPieces_IsAnswered()
    {
        // Bigger than a first read buffer, and cut mid-line: the request is put together.
        await using var h = await StartAsync();
        await using var client = await h.ConnectAsync();
        string request = "ccert_subject=" + new string('s', 3000) + "\nccert_issuer=" + new string('i', 3000) + "\n" + Requests.Policy();
        byte[] bytes = Encoding.UTF8.GetBytes(request);
        for (int i = 0; i < bytes.Length; i += 97)
        {
            await client.SendAsync(bytes.AsMemory(i, Math.Min(97, bytes.Length - i)).ToArray());
            await Task.Delay(1);
        }
        Assert.Equal(Greylisted, await client.ReadActionAsync());
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy(recipient: "next@example.org")));
    }
}

/// <summary>The Linux transport: one epoll loop, answers handed back by the database writer.</summary>
public sealed class EpollTransportTests : PolicyServerTests
{
    private protected override PolicyTransport Transport => PolicyTransport.Epoll;
}

/// <summary>The portable transport on .NET's sockets (Windows, or POSTGREY_TRANSPORT=sockets).</summary>
public sealed class SocketTransportTests : PolicyServerTests
{
    private protected override PolicyTransport Transport => PolicyTransport.Sockets;
}
