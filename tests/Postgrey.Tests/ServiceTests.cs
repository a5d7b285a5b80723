using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>
/// The service as an admin runs it: in the background with a pid file and syslog, started as
/// root and dropping to its user, under systemd (readiness, socket activation), and stopped by
/// signals. Real processes, real sockets, real files.
/// </summary>
public sealed partial class ServiceTests : IDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private readonly TempDirectory _dir = new();

    public ServiceTests()
    {
        // Readable by an unprivileged user: some tests run the service as nobody.
        File.SetUnixFileMode(_dir.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    private string[] Args(int port, params string[] extra) =>
    [
        $"--inet=127.0.0.1:{port}",
        $"--dbdir={_dir.File("db")}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        .. extra,
    ];

    private static async Task<string?> AskAsync(int port, string request)
    {
        await using var client = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return await client.AskAsync(request);
    }

    [Fact]
    public async Task Daemonize_ServesInTheBackground_WritesThePidFile_AndLogsToSyslog()
    {
        using var syslog = new DatagramListener(_dir.File("log"));
        string pidFile = _dir.File("postgrey.pid");
        int port = PolicyServerProcess.FreePort();

        var (code, output) = await PostgreyProcess.RunAsync(Args(port, "-d", $"--pidfile={pidFile}", $"--syslog-socket={syslog.Path}"));

        Assert.True(code == 0, output);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);
        try
        {
            Assert.True(Directory.Exists($"/proc/{pid}"), "the daemon runs on after the command returned");
            string[] stat = File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1].Split(' ');
            Assert.Equal(pid.ToString(CultureInfo.InvariantCulture), stat[3]); // session id: its own session
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));

            string line = await syslog.WaitForAsync(m => m.Contains("action=greylist", StringComparison.Ordinal));
            // Sys::Syslog's form, facility mail (2), action lines at notice (5): 2*8+5 = 21.
            Assert.Matches(
                $@"^<21>[A-Z][a-z]{{2}} [ 1-3]\d \d\d:\d\d:\d\d postgrey\[{pid}\]: action=greylist, reason=new, client_name=mx\.example\.net, client_address=192\.0\.2\.7, sender=a@example\.net, recipient=b@example\.org$",
                line);

            // A second daemon on the same pid file: refused while the first runs.
            var (again, againOutput) = await PostgreyProcess.RunAsync(
                $"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={_dir.File("db2")}", "-d", $"--pidfile={pidFile}", $"--syslog-socket={syslog.Path}");
            Assert.Equal(1, again);
            Assert.Contains($"ERROR: pid file {pidFile}: process {pid} is still running", againOutput, StringComparison.Ordinal);
        }
        finally
        {
            await StopAsync(pid);
        }
        Assert.False(File.Exists(pidFile), "the pid file is removed at exit");
        Assert.Contains(syslog.Messages, m => m.EndsWith($"postgrey[{pid}]: database {_dir.File("db")}/postgrey.sqlite3 closed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Daemonize_StartupError_ReachesTheTerminal_AndExitsNonZero()
    {
        using var syslog = new DatagramListener(_dir.File("log"));
        int port = PolicyServerProcess.FreePort();
        await using var first = PostgreyProcess.Start(Args(port));
        await first.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        // Same dbdir: the daemon cannot take the lock; the admin must see why.
        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort(), "-d", $"--syslog-socket={syslog.Path}"));

        Assert.Equal(1, code);
        Assert.Contains($"ERROR: locked: {_dir.File("db")}/postgrey.lock", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StalePidFile_IsReplaced()
    {
        string pidFile = _dir.File("postgrey.pid");
        using (var gone = Process.Start("true"))
        {
            await gone.WaitForExitAsync();
            File.WriteAllText(pidFile, gone.Id.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(Args(port, $"--pidfile={pidFile}"));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        // Written just after the bind (the socket already takes connections into its backlog).
        string expected = server.Pid.ToString(CultureInfo.InvariantCulture);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (File.ReadAllText(pidFile).Trim() != expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        Assert.Equal(expected, File.ReadAllText(pidFile).Trim());
    }

    [Fact]
    public async Task Syslog_WithoutASyslogDaemon_SaysSoOnce_AndKeepsServing()
    {
        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(Args(port, "--syslog", $"--syslog-socket={_dir.File("nobody-listens")}"));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "c@example.net")));

        Assert.Single(server.Lines, l => l.Contains($"can't log to {_dir.File("nobody-listens")}", StringComparison.Ordinal));
    }

    [Fact]
    public async Task StartedAsRoot_BindsAndOpensFirst_ThenRunsAsTheUser()
    {
        Requires.Root("it starts the service as root");
        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(Args(port, "--user=nobody", "--group=nogroup"));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
        // The socket accepts into its backlog from the bind on; the switch comes just after.
        await server.WaitForLineAsync(l => l.StartsWith("running as ", StringComparison.Ordinal));

        string status = File.ReadAllText($"/proc/{server.Pid}/status");
        Assert.Matches(@"(?m)^Uid:\s+65534\s+65534\s+65534\s+65534$", status);
        Assert.Matches(@"(?m)^Gid:\s+65534\s+65534\s+65534\s+65534$", status);
        Assert.Matches(@"(?m)^Groups:\s+65534\s*$", status);
        Assert.Contains("running as nobody (uid 65534), group nogroup (gid 65534)", server.Lines);
        foreach (string file in Directory.EnumerateFileSystemEntries(_dir.File("db")).Append(_dir.File("db")))
        {
            Assert.Equal("nobody:nogroup", await OwnerAsync(file));
        }

        // Writes still work after the drop, and the whitelists reload as nobody.
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(testTime: null)));
        server.Signal("HUP");
        await server.WaitForLineAsync(l => l == "HUP received: reloading whitelists...");
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "second@example.net")));
    }

    [Theory]
    [InlineData("--user=no-such-user-x", "ERROR: --user=no-such-user-x: no such user")]
    [InlineData("--group=no-such-group-x", "ERROR: --group=no-such-group-x: no such group")]
    public async Task StartedAsRoot_UnknownAccount_IsAnErrorBeforeAnythingIsOpened(string flag, string error)
    {
        Requires.Root("it starts the service as root");
        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort(), flag.StartsWith("--group", StringComparison.Ordinal) ? ["--user=nobody", flag] : [flag]));

        Assert.Equal(1, code);
        Assert.Contains(error, output.Split('\n'));
        Assert.False(Directory.Exists(_dir.File("db")), "nothing opened or created");
    }

    [Fact]
    public async Task SecondStopSignal_StopsAtOnce_WhileTheFirstWaitsForARequestInFlight()
    {
        await using var stopping = await StoppingWithARequestInFlightAsync();

        await Task.Delay(1100); // a repeat within a second is the same stop (next test)
        stopping.Server.Signal("TERM");
        await stopping.Server.WaitForExitAsync(TimeSpan.FromSeconds(3));

        Assert.Equal(1, stopping.Server.ExitCode);
        Assert.Contains("second stop signal: stopping at once", stopping.Server.Lines);
    }

    [Fact]
    public async Task FirstStopSignal_AnswersTheRequestInFlight_ThenExits0()
    {
        await using var stopping = await StoppingWithARequestInFlightAsync();

        stopping.Holder.Dispose(); // the lock goes away: the decision commits and is answered

        Assert.Equal(Greylisted, await stopping.Client.ReadActionAsync());
        await stopping.Server.WaitForExitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(0, stopping.Server.ExitCode);
        Assert.Contains($"database {_dir.File("db")}/postgrey.sqlite3 closed", stopping.Server.Lines);
    }

    [Fact]
    public async Task StopSignalDeliveredTwiceAtOnce_IsOneGracefulStop()
    {
        // `timeout` signals the process, then its process group: the same TERM twice.
        await using var stopping = await StoppingWithARequestInFlightAsync();

        stopping.Server.Signal("TERM");
        await Task.Delay(300);
        Assert.False(stopping.Server.HasExited, "the repeat did not end it at once");
        stopping.Holder.Dispose();

        Assert.Equal(Greylisted, await stopping.Client.ReadActionAsync());
        await stopping.Server.WaitForExitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(0, stopping.Server.ExitCode);
    }

    /// <summary>A service sent SIGTERM while it has a request in flight: another program holds
    /// the database's write lock, so the decision waits for it (up to the 5 s busy timeout).
    /// Returns once the listeners are closed; disposing <c>Holder</c> releases the lock.</summary>
    private async Task<StoppingServer> StoppingWithARequestInFlightAsync()
    {
        int port = PolicyServerProcess.FreePort();
        var server = PostgreyProcess.Start(Args(port));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
        // One answer first: the socket takes connections from the bind on, but they are served
        // only once the host has started, and a stop before that would never accept this one.
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(clientAddress: "198.51.100.1")));
        var holder = new SqliteConnection($"Data Source={_dir.File("db")}/postgrey.sqlite3;Pooling=False");
        holder.Open();
        using (var begin = holder.CreateCommand())
        {
            begin.CommandText = "BEGIN EXCLUSIVE";
            begin.ExecuteNonQuery();
        }
        var client = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        await client.SendAsync(Requests.Policy());
        await Task.Delay(300);

        server.Signal("TERM");
        await WaitUntilRefusedAsync(port); // listeners closed first...
        Assert.False(server.HasExited, "...while the request in flight is still awaited");
        return new StoppingServer(server, holder, client);
    }

    private sealed record StoppingServer(PolicyServerProcess Server, SqliteConnection Holder, PolicyClient Client) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            Holder.Dispose();
            await Client.DisposeAsync();
            await Server.DisposeAsync();
        }
    }

    [Fact]
    public async Task StartedAsRoot_WithTheDbdirInAPrivateDirectory_CheckpointsStillWorkAfterTheDrop()
    {
        Requires.Root("it starts the service as root");
        string secret = _dir.File("private");
        Directory.CreateDirectory(secret);
        File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(
            $"--inet=127.0.0.1:{port}", $"--dbdir={secret}/db", $"--whitelist-clients={_dir.File("clients")}",
            $"--whitelist-recipients={_dir.File("recipients")}", "--user=nobody", "--group=nogroup");
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        // Everything the database needs was opened as root; nobody could not open it now.
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        await Task.Delay(1500); // three checkpoint rounds
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "second@example.net")));
        Assert.DoesNotContain(server.Lines, l => l.Contains("checkpoint failed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task UnderSystemd_ReadyIsSentOnlyOnceTheSocketListens_AndStoppingAtTheEnd()
    {
        using var notify = new DatagramListener(_dir.File("notify"));
        // Microsoft.Extensions.Hosting.Systemd knows systemd by its parent's name: a shell
        // script called "systemd" starts the service (and passes TERM on).
        string systemd = _dir.Write("systemd", "#!/bin/sh\n\"$@\" &\nchild=$!\ntrap 'kill -TERM $child' TERM\nwait $child\nwait $child\n");
        File.SetUnixFileMode(systemd, (UnixFileMode)Convert.ToInt32("755", 8));
        int port = PolicyServerProcess.FreePort();

        await using var server = PolicyServerProcess.Start(systemd, ["dotnet", BuiltPostgrey.DllPath, .. Args(port), .. BuiltPostgrey.IsRoot ? ["--user=root"] : Array.Empty<string>()],
            environment: new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notify.Path });

        await notify.WaitForAsync(m => m == "READY=1");
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy())); // no wait: it listened before READY

        server.Signal("TERM");
        await notify.WaitForAsync(m => m == "STOPPING=1");
        await server.WaitForExitAsync(TimeSpan.FromSeconds(15));
        Assert.Single(notify.Messages, m => m == "READY=1"); // the library's, not ours as well
    }

    [Fact]
    public async Task WithNotifySocket_ButNoSystemdParentToBeSeen_ReadyIsStillSent()
    {
        // ProtectProc=invisible hides systemd's /proc entry from the library's detection.
        using var notify = new DatagramListener(_dir.File("notify"));
        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.StartWith(new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notify.Path }, Args(port));

        await notify.WaitForAsync(m => m == "READY=1");
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        server.Signal("TERM");
        await notify.WaitForAsync(m => m == "STOPPING=1");
        Assert.Equal(2, notify.Messages.Count);
    }

    [Fact]
    public async Task SocketActivation_ServesThePassedSocket_AndARestartRefusesNoConnection()
    {
        // What systemd does for postgrey.socket: it holds the listening socket and passes it to
        // each start of the service as descriptor 3 with LISTEN_PID/LISTEN_FDS.
        using var listening = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listening.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listening.Listen(16);
        int port = ((IPEndPoint)listening.LocalEndPoint!).Port;
        int fd = (int)listening.SafeHandle.DangerousGetHandle();
        Assert.Equal(0, Fcntl(fd, 2 /* F_SETFD */, 0)); // inheritable by the child

        await using (var first = StartActivated(fd))
        {
            await first.WaitForLineAsync(l => l == $"listening on 127.0.0.1:{port} (socket passed by systemd)");
            Assert.DoesNotContain(first.Lines, l => l.StartsWith("listening on 127.0.0.1:1", StringComparison.Ordinal));
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        }

        // The service is down; Postfix connects and asks anyway: the kernel queues it.
        await using var waiting = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        await waiting.SendAsync(Requests.Policy(sender: "during-restart@example.net"));

        await using var second = StartActivated(fd);
        Assert.Equal(Greylisted, await waiting.ReadActionAsync());
    }

    private PolicyServerProcess StartActivated(int fd) => PolicyServerProcess.Start("bash",
        [
            "-c", "exec 3<&\"$0\"; export LISTEN_FDS=1 LISTEN_PID=$$; exec \"$@\"",
            fd.ToString(CultureInfo.InvariantCulture), "dotnet", BuiltPostgrey.DllPath,
            .. Args(1), .. BuiltPostgrey.IsRoot ? ["--user=root"] : Array.Empty<string>(),
        ]);

    private static async Task WaitUntilRefusedAsync(int port)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                await using var probe = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
            }
            catch (SocketException)
            {
                return;
            }
            await Task.Delay(20);
        }
        throw new TimeoutException("the listener was not closed");
    }

    private static async Task StopAsync(int pid)
    {
        using (var kill = Process.Start("kill", ["-TERM", pid.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (Directory.Exists($"/proc/{pid}") && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
    }

    private static async Task<string> OwnerAsync(string path)
    {
        using var stat = Process.Start(new ProcessStartInfo("stat", ["-c", "%U:%G", path]) { RedirectStandardOutput = true })!;
        string owner = (await stat.StandardOutput.ReadToEndAsync()).Trim();
        await stat.WaitForExitAsync();
        return owner;
    }

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    public void Dispose() => _dir.Dispose();
}
