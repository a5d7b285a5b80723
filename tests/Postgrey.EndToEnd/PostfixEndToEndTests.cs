using System.Net;
using System.Net.Sockets;
using Postgrey.Testing;

namespace Postgrey.EndToEnd;

/// <summary>
/// A real Postfix, talking to our service, defers and then accepts real mail. Each test has its
/// own Postfix instance, service and database; delays are 2 seconds.
/// </summary>
public sealed class PostfixEndToEndTests : IDisposable
{
    private const int Delay = 2;
    private static string Greylisted(string to) => $"450 4.2.0 <{to}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/test.example.html";
    private readonly TempDirectory _dir = new();

    public PostfixEndToEndTests()
    {
        _dir.Write("clients", "127.0.0.2\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    private PolicyServerProcess StartPostgrey(string listen) => BuiltPostgrey.Start(
    [
        listen, $"--dbdir={_dir.File("db")}", $"--delay={Delay}", "--hostname=mx.test.example",
        $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}",
    ]);

    private static Task WaitAsync(PolicyServerProcess server, EndPoint endPoint) =>
        server.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(30));

    private static async Task GreylistThenAcceptAsync(PostfixInstance postfix, string to, string subject)
    {
        Assert.Equal(Greylisted(to), await postfix.SendAsync("alice@sender.example", to, subject));
        await Task.Delay(TimeSpan.FromSeconds(Delay + 1));
        Assert.Equal("250 2.1.5 Ok", await postfix.SendAsync("alice@sender.example", to, subject));
        string message = await postfix.WaitForMessageAsync(subject);
        Assert.Matches(@"\nX-Greylist: delayed \d+ seconds by postgrey-1\.37 at mx\.test\.example; \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \S+\n", message);
    }

    [Fact]
    public async Task Tcp_FirstAttemptIsDeferred_RetryAfterTheDelayIsDeliveredWithTheHeader()
    {
        Tools.Require(); // before anything is started: a skip leaves nothing behind
        int port = PolicyServerProcess.FreePort();
        await using var postgrey = StartPostgrey($"--inet=127.0.0.1:{port}");
        await WaitAsync(postgrey, new IPEndPoint(IPAddress.Loopback, port));
        await using var postfix = await PostfixInstance.StartAsync($"inet:127.0.0.1:{port}");

        await GreylistThenAcceptAsync(postfix, "bob@test.example", "e2e tcp");
        await postgrey.WaitForLineAsync(l => l.StartsWith("action=greylist, reason=new, client_name=unknown, client_address=127.0.0.1, sender=alice@sender.example, recipient=bob@test.example", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task WhitelistedRecipientAndClient_AreAcceptedAtOnce()
    {
        Tools.Require(); // before anything is started: a skip leaves nothing behind
        int port = PolicyServerProcess.FreePort();
        await using var postgrey = StartPostgrey($"--inet=127.0.0.1:{port}");
        await WaitAsync(postgrey, new IPEndPoint(IPAddress.Loopback, port));
        await using var postfix = await PostfixInstance.StartAsync($"inet:127.0.0.1:{port}");

        Assert.Equal("250 2.1.5 Ok", await postfix.SendAsync("alice@sender.example", "postmaster@test.example", "e2e recipient whitelist"));
        Assert.Equal("250 2.1.5 Ok", await postfix.SendAsync("alice@sender.example", "carol@test.example", "e2e client whitelist", clientAddress: "127.0.0.2"));
        Assert.DoesNotContain("X-Greylist", await postfix.WaitForMessageAsync("e2e recipient whitelist"), StringComparison.Ordinal);
        Assert.DoesNotContain("X-Greylist", await postfix.WaitForMessageAsync("e2e client whitelist"), StringComparison.Ordinal);
        // Lines are written in batches by a thread of their own: wait for them, bounded.
        await postgrey.WaitForLineAsync(l => l.StartsWith("action=pass, reason=recipient whitelist,", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        await postgrey.WaitForLineAsync(l => l.StartsWith("action=pass, reason=client whitelist, client_name=unknown, client_address=127.0.0.2,", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task UnixSocket_FirstAttemptIsDeferred_RetryIsDelivered()
    {
        Tools.Require(); // before anything is started: a skip leaves nothing behind
        string socket = _dir.File("postgrey.sock");
        await using var postgrey = StartPostgrey($"--unix={socket}");
        await WaitAsync(postgrey, new UnixDomainSocketEndPoint(socket));
        await using var postfix = await PostfixInstance.StartAsync($"unix:{socket}");

        await GreylistThenAcceptAsync(postfix, "dave@test.example", "e2e unix");
    }

    [Fact]
    public async Task ServiceStopped_PostfixAnswers451_RestartOnTheSameDatabaseKeepsThePassedTriplet()
    {
        Tools.Require(); // before anything is started: a skip leaves nothing behind
        int port = PolicyServerProcess.FreePort();
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        await using var postfix = await PostfixInstance.StartAsync($"inet:127.0.0.1:{port}");
        await using (var first = StartPostgrey($"--inet=127.0.0.1:{port}"))
        {
            await WaitAsync(first, endPoint);
            await GreylistThenAcceptAsync(postfix, "erin@test.example", "e2e before restart");
        }

        string answer = await postfix.SendAsync("alice@sender.example", "frank@test.example", "e2e while stopped");
        Assert.StartsWith("451 4.3.5 ", answer, StringComparison.Ordinal);

        await using var second = StartPostgrey($"--inet=127.0.0.1:{port}");
        await WaitAsync(second, endPoint);
        Assert.Equal("250 2.1.5 Ok", await postfix.SendAsync("alice@sender.example", "erin@test.example", "e2e after restart"));
        Assert.DoesNotContain("X-Greylist", await postfix.WaitForMessageAsync("e2e after restart"), StringComparison.Ordinal);
    }

    public void Dispose() => _dir.Dispose();
}
