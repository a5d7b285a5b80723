using System.Net;
using System.Net.Sockets;
using Postgrey.Testing;

namespace Postgrey.Tests.Attacks;

/// <summary>
/// Each test makes an attack or a fault for real and checks the service's answer to it: links
/// planted by the service account for the next root start to follow, a second instance on the
/// port, a file at the --unix path, a dbdir the service cannot write, signals sent while it
/// starts, a program directory the account cannot read. docs/security.md says why each matters.
/// </summary>
[Trait("Category", "Attack")]
public sealed class SecurityAttackTests : IDisposable
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private readonly TempDirectory _dir = new();

    public SecurityAttackTests()
    {
        // Readable by nobody, whom most tests run the service as.
        File.SetUnixFileMode(_dir.Path, (UnixFileMode)Convert.ToInt32("755", 8));
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    private string Db => _dir.File("db");

    private string[] Args(int port, params string[] extra) =>
    [
        $"--inet=127.0.0.1:{port}",
        $"--dbdir={Db}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        .. extra,
    ];

    private static async Task<string?> AskAsync(int port, string request)
    {
        await using var client = await PolicyClient.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return await client.AskAsync(request);
    }

    /// <summary>A first root start as nobody, one answer, a clean stop: the dbdir and its files are
    /// nobody's now, as on a system where the service has run before.</summary>
    private async Task FirstStartAsync()
    {
        int port = PolicyServerProcess.FreePort();
        await using (var server = PostgreyProcess.Start(Args(port, "--user=nobody")))
        {
            await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        }
        Assert.Equal($"{AttackFiles.Nobody}:{AttackFiles.Nobody}", AttackFiles.Owner(Db));
    }

    // Item 1: links in the dbdir.

    [Theory]
    [InlineData("postgrey.lock")]
    [InlineData("postgrey.sqlite3")]
    [InlineData("postgrey.sqlite3-wal")]
    [InlineData("postgrey.sqlite3-shm")]
    public async Task RootStart_LinkPlantedForAServiceFile_IsRefused_AndTheTargetKeepsOwnerAndContent(string name)
    {
        Requires.Root("the attack is on a root start");
        string secret = AttackFiles.RootSecret(_dir.File("secret"));
        await FirstStartAsync();
        string planted = Path.Combine(Db, name);
        File.Delete(planted);
        File.CreateSymbolicLink(planted, secret);
        AttackFiles.GiveToNobody(planted);

        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort(), "--user=nobody"));

        Assert.Equal(1, code);
        Assert.Contains(output.Split('\n'), l => l.StartsWith($"ERROR: {planted} is a symbolic link, not a regular file: refusing to open it as root", StringComparison.Ordinal));
        AttackFiles.AssertUntouched(secret);
        Assert.Equal("symbolic link", AttackFiles.Kind(planted));
        Assert.Equal($"{AttackFiles.Nobody}:{AttackFiles.Nobody}", AttackFiles.Owner(Db)); // given back as it was
    }

    [Fact]
    public async Task RootStart_HardLinkToARootFileAsTheDatabase_IsRefused_AndTheFileKeepsOwnerAndContent()
    {
        Requires.Root("the attack is on a root start");
        // With fs.protected_hardlinks=0 (not Debian's default) the account could make this link itself.
        string secret = AttackFiles.RootSecret(_dir.File("secret"));
        await FirstStartAsync();
        string planted = Path.Combine(Db, "postgrey.sqlite3");
        File.Delete(planted);
        AttackFiles.HardLink(secret, planted);

        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort(), "--user=nobody"));

        Assert.Equal(1, code);
        Assert.Contains(output.Split('\n'), l => l.StartsWith($"ERROR: {planted} has 2 hard links: refusing to open it as root", StringComparison.Ordinal));
        AttackFiles.AssertUntouched(secret);
    }

    [Fact]
    public async Task RootStart_LinkPlantedUnderAnotherName_IsNeitherFollowedNorGivenAway()
    {
        Requires.Root("the attack is on a root start");
        string secret = AttackFiles.RootSecret(_dir.File("secret"));
        await FirstStartAsync();
        string planted = Path.Combine(Db, "x");
        File.CreateSymbolicLink(planted, secret);
        AttackFiles.GiveToNobody(planted);

        int port = PolicyServerProcess.FreePort();
        await using (var server = PostgreyProcess.Start(Args(port, "--user=nobody")))
        {
            await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "second@example.net")));
        }

        AttackFiles.AssertUntouched(secret);
        Assert.Equal($"{AttackFiles.Nobody}:{AttackFiles.Nobody}", AttackFiles.Owner(Path.Combine(Db, "postgrey.sqlite3")));
    }

    [Fact]
    public async Task RootStart_DbdirInADirectoryTheAccountOwns_IsRefused_AndTheLinkItPutThereIsNotFollowed()
    {
        Requires.Root("the attack is on a root start");
        // nobody owns home, so it can make home/db a link to a directory of root's at any time.
        string home = _dir.File("home");
        string rootDir = _dir.File("rootdir");
        Directory.CreateDirectory(home);
        Directory.CreateDirectory(rootDir);
        AttackFiles.GiveToNobody(home);
        File.CreateSymbolicLink(Path.Combine(home, "db"), rootDir);
        AttackFiles.GiveToNobody(Path.Combine(home, "db"));

        var (code, output) = await PostgreyProcess.RunAsync(
            $"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={home}/db", $"--whitelist-clients={_dir.File("clients")}",
            $"--whitelist-recipients={_dir.File("recipients")}", "--user=nobody");

        Assert.Equal(1, code);
        Assert.Contains(output.Split('\n'), l => l.StartsWith($"ERROR: --dbdir={home}/db: {home} is owned by uid 65534: whoever may write it", StringComparison.Ordinal));
        Assert.Equal("0:0", AttackFiles.Owner(rootDir));
        Assert.Empty(Directory.EnumerateFileSystemEntries(rootDir));
    }

    [Fact]
    public async Task RootStart_DbdirGivenAsALinkRootMade_IsFollowed()
    {
        Requires.Root("it starts the service as root");
        string real = _dir.File("real");
        Directory.CreateDirectory(real);
        File.CreateSymbolicLink(Db, real);

        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(Args(port, "--user=nobody"));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        Assert.Equal($"{AttackFiles.Nobody}:{AttackFiles.Nobody}", AttackFiles.Owner(real));
        Assert.Equal("0:0", AttackFiles.Owner(Db)); // the link itself is root's
    }

    [Fact]
    public async Task LockFileIsALink_InAStartWithoutPrivilegesToDrop_IsRefusedNotFollowed()
    {
        // Not root, or root as root (--user=root, added by PostgreyProcess): the lock file is
        // still opened without following a link, by itself.
        Directory.CreateDirectory(Db);
        string target = _dir.File("target");
        File.CreateSymbolicLink(Path.Combine(Db, "postgrey.lock"), target);

        var (code, output) = await PostgreyProcess.RunAsync(Args(PolicyServerProcess.FreePort()));

        Assert.Equal(1, code);
        Assert.Contains($"ERROR: the lock file {Db}/postgrey.lock is a symbolic link: refusing to follow it (remove it)", output.Split('\n'));
        Assert.False(File.Exists(target), "nothing created through the link");
    }

    // Item 2: the pid file.

    [Fact]
    public async Task RootStart_LinksPlantedAtThePidFileAndItsOldTemporaryName_AreReplacedNotFollowed()
    {
        Requires.Root("the attack is on a root start");
        // A pid directory the account owns, as /run/postgrey is on many systems.
        string run = _dir.File("run");
        Directory.CreateDirectory(run);
        AttackFiles.GiveToNobody(run);
        string pidPath = Path.Combine(run, "postgrey.pid");
        string secret = AttackFiles.RootSecret(_dir.File("secret"));
        string other = AttackFiles.RootSecret(_dir.File("other"));
        File.CreateSymbolicLink(pidPath + ".tmp", secret);
        File.CreateSymbolicLink(pidPath, other);

        int port = PolicyServerProcess.FreePort();
        await using var server = PostgreyProcess.Start(Args(port, "--user=nobody", $"--pidfile={pidPath}"));
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
        await server.WaitForLineAsync(l => l.StartsWith("running as ", StringComparison.Ordinal));

        AttackFiles.AssertUntouched(secret);
        AttackFiles.AssertUntouched(other);
        Assert.Equal("regular file", AttackFiles.Kind(pidPath));
        Assert.Equal(AttackFiles.Invariant(server.Pid) + "\n", File.ReadAllText(pidPath));
        Assert.Equal($"{AttackFiles.Nobody}:{AttackFiles.Nobody}", AttackFiles.Owner(pidPath));
        Assert.Equal("644", AttackFiles.Mode(pidPath));
        Assert.Equal(["postgrey.pid", "postgrey.pid.tmp"], Directory.EnumerateFileSystemEntries(run).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    // Item 3: a second instance on the port.

    [Fact]
    public async Task SecondInstance_OnTheSamePortWithAnotherDbdir_ExitsWithAddressInUse_AndTheFirstKeepsServing()
    {
        int port = PolicyServerProcess.FreePort();
        await using var first = PostgreyProcess.Start(Args(port));
        await first.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));

        var (code, output) = await PostgreyProcess.RunAsync([.. Args(port).Where(a => !a.StartsWith("--dbdir", StringComparison.Ordinal)), $"--dbdir={_dir.File("db2")}"]);

        Assert.Equal(1, code);
        Assert.Contains($"ERROR: can't bind to 127.0.0.1:{port}: Address already in use", output.Split('\n'));
        // Every connection reaches the first one: a second greylist would answer "new" to half of them.
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: $"s{i}@example.net")));
        }
        await first.WaitForLineAsync(l => l.Contains("sender=s9@example.net", StringComparison.Ordinal));
        Assert.Equal(10, first.Lines.Count(l => l.StartsWith("action=greylist, reason=new", StringComparison.Ordinal)));
    }

    // Item 4: the socket's owner.

    [Fact]
    public async Task RootStart_UnixSocket_IsGivenToUserAndGroup_WithItsSocketMode()
    {
        Requires.Root("it starts the service as root");
        string socket = _dir.File("sock");
        await using var server = PostgreyProcess.Start(
            $"--unix={socket}", "--socketmode=0660", $"--dbdir={Db}", $"--whitelist-clients={_dir.File("clients")}",
            $"--whitelist-recipients={_dir.File("recipients")}", "--user=nobody", "--group=nogroup");
        await server.WaitForUnixAsync(socket);
        await server.WaitForLineAsync(l => l.StartsWith("running as ", StringComparison.Ordinal));

        Assert.Equal("socket", AttackFiles.Kind(socket));
        Assert.Equal("65534:65534", AttackFiles.Owner(socket));
        Assert.Equal("660", AttackFiles.Mode(socket));
        await using var client = await PolicyClient.ConnectAsync(new UnixDomainSocketEndPoint(socket));
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
    }

    // Item 14: what is at the --unix path.

    [Fact]
    public async Task UnixPath_IsARegularFile_IsRefused_AndTheFileIsKept()
    {
        string path = _dir.Write("not-a-socket", "precious\n");

        var (code, output) = await PostgreyProcess.RunAsync($"--unix={path}", $"--dbdir={Db}", $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}");

        Assert.Equal(1, code);
        Assert.Contains($"ERROR: --unix={path}: {path} exists and is a regular file, not a socket: refusing to replace it", output.Split('\n'));
        Assert.Equal("precious\n", File.ReadAllText(path));
    }

    [Fact]
    public async Task UnixPath_IsALinkToAFile_IsRefused_AndNeitherIsRemoved()
    {
        string target = _dir.Write("target", "precious\n");
        string path = _dir.File("link");
        File.CreateSymbolicLink(path, target);

        var (code, output) = await PostgreyProcess.RunAsync($"--unix={path}", $"--dbdir={Db}", $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}");

        Assert.Equal(1, code);
        Assert.Contains($"ERROR: --unix={path}: {path} exists and is a symbolic link, not a socket: refusing to replace it", output.Split('\n'));
        Assert.Equal("symbolic link", AttackFiles.Kind(path));
        Assert.Equal("precious\n", File.ReadAllText(target));
    }

    [Fact]
    public async Task UnixPath_IsAStaleSocket_IsReplaced()
    {
        string path = _dir.File("stale");
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            // A crashed server's file: .NET removes the file it bound when the socket is closed, so
            // the file is moved away from under it first.
            dead.Bind(new UnixDomainSocketEndPoint(path + ".bound"));
            File.Move(path + ".bound", path);
        }
        Assert.Equal("socket", AttackFiles.Kind(path));

        await using var server = PostgreyProcess.Start($"--unix={path}", $"--dbdir={Db}", $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}");
        await server.WaitForUnixAsync(path);
        await using var client = await PolicyClient.ConnectAsync(new UnixDomainSocketEndPoint(path));
        Assert.Equal(Greylisted, await client.AskAsync(Requests.Policy()));
    }

    // Item 15: a dbdir the service cannot write.

    [Fact]
    public async Task DbdirNotWritable_SaysTheLockFileCannotBeCreated_AndWhy()
    {
        Requires.Root("root ignores permissions: the service is started as nobody by setpriv");
        Requires.Program("/usr/bin/setpriv", "util-linux");
        string readOnly = _dir.File("ro");
        Directory.CreateDirectory(readOnly);
        File.SetUnixFileMode(readOnly, (UnixFileMode)Convert.ToInt32("755", 8)); // root's: nobody may not create in it
        // A copy nobody can read: the checkout itself may sit in a directory only root may enter.
        string program = _dir.File("program");
        CopyDirectory(Path.GetDirectoryName(BuiltPostgrey.DllPath)!, program);

        await using var process = PolicyServerProcess.Start("/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", "dotnet", Path.Combine(program, Path.GetFileName(BuiltPostgrey.DllPath)),
             $"--inet=127.0.0.1:{PolicyServerProcess.FreePort()}", $"--dbdir={readOnly}",
             $"--whitelist-clients={_dir.File("clients")}", $"--whitelist-recipients={_dir.File("recipients")}"]);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(1, process.ExitCode);
        Assert.Contains($"ERROR: can't create or open the lock file {readOnly}/postgrey.lock: Permission denied", process.Lines);
        Assert.DoesNotContain(process.Lines, l => l.Contains("locked", StringComparison.Ordinal));
    }

    // Item 16: signals while it starts.

    /// <summary>Starts the service and returns as soon as it is parsing its flags (System.CommandLine
    /// is mapped into it): the first milliseconds of Main, long before it serves.</summary>
    private async Task<PolicyServerProcess> StartAndCatchItParsingAsync(int port)
    {
        var server = PostgreyProcess.Start(Args(port));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                if (File.ReadAllText($"/proc/{server.Pid}/maps").Contains("System.CommandLine.dll", StringComparison.Ordinal))
                {
                    return server;
                }
            }
            catch (IOException)
            {
                // between fork and exec, or racing the kernel: look again
            }
            await Task.Yield();
        }
        await server.DisposeAsync();
        throw new TimeoutException("the service never loaded System.CommandLine");
    }

    [Fact]
    public async Task HangUp_SentWhileItParsesItsFlags_DoesNotKillIt_AndTheReloadFollowsOnceItServes()
    {
        Requires.Linux();
        int port = PolicyServerProcess.FreePort();
        await using var server = await StartAndCatchItParsingAsync(port);

        server.Signal("HUP");

        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(30));
        await server.WaitForLineAsync(l => l == "HUP received: reloading whitelists...");
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
    }

    [Fact]
    public async Task Terminate_SentWhileItParsesItsFlags_StopsItCleanly()
    {
        Requires.Linux();
        int port = PolicyServerProcess.FreePort();
        await using var server = await StartAndCatchItParsingAsync(port);

        server.Signal("TERM");

        await server.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, server.ExitCode);
    }

    [Fact]
    public async Task Daemon_StartedWithHangUpIgnoredForItsStart_StillReloadsOnHangUp()
    {
        Requires.Linux();
        // -d's foreground process makes SIGHUP ignored for the daemon until its handlers are in
        // place; ignored must not stay ignored, or kill -HUP would no longer reload it.
        using var syslog = new DatagramListener(_dir.File("log"));
        string pidFile = _dir.File("postgrey.pid");
        int port = PolicyServerProcess.FreePort();
        var (code, output) = await PostgreyProcess.RunAsync(Args(port, "-d", $"--pidfile={pidFile}", $"--syslog-socket={syslog.Path}"));
        Assert.True(code == 0, output);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
            using (var hup = System.Diagnostics.Process.Start("kill", ["-HUP", AttackFiles.Invariant(pid)]))
            {
                await hup.WaitForExitAsync(TestContext.Current.CancellationToken);
            }
            await syslog.WaitForAsync(m => m.EndsWith("HUP received: reloading whitelists...", StringComparison.Ordinal));
            Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "second@example.net")));
        }
        finally
        {
            using var term = System.Diagnostics.Process.Start("kill", ["-TERM", AttackFiles.Invariant(pid)]);
            await term.WaitForExitAsync(TestContext.Current.CancellationToken);
            for (int i = 0; i < 300 && Directory.Exists($"/proc/{pid}"); i++)
            {
                await Task.Delay(50, TestContext.Current.CancellationToken);
            }
        }
    }

    // Issue 12: a program directory only root can read.

    [Fact]
    public async Task RootStart_ProgramInADirectoryOnlyRootCanRead_ServesReloadsAndStopsAsNobody()
    {
        Requires.Root("it starts the service as root");
        string hidden = _dir.File("hidden");
        Directory.CreateDirectory(hidden);
        File.SetUnixFileMode(hidden, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string program = Path.Combine(hidden, "app");
        CopyDirectory(Path.GetDirectoryName(BuiltPostgrey.DllPath)!, program);

        int port = PolicyServerProcess.FreePort();
        await using var server = PolicyServerProcess.Start("dotnet", [Path.Combine(program, "postgrey.dll"), .. Args(port, "--user=nobody")]);
        await server.WaitUntilListeningAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromSeconds(60));
        await server.WaitForLineAsync(l => l.StartsWith("running as nobody", StringComparison.Ordinal));

        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy()));
        server.Signal("HUP");
        await server.WaitForLineAsync(l => l == "HUP received: reloading whitelists...");
        Assert.Equal(Greylisted, await AskAsync(port, Requests.Policy(sender: "second@example.net")));
        server.Signal("TERM");
        await server.WaitForExitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, server.ExitCode);
        Assert.DoesNotContain(server.Lines, l => l.Contains("Exception", StringComparison.Ordinal));
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    public void Dispose() => _dir.Dispose();
}
