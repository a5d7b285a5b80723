using System.Diagnostics;
using System.Globalization;

namespace Postgrey.Testing;

/// <summary>
/// A private PostgreSQL cluster for one test class (xunit class fixture): <c>initdb</c> and
/// <c>pg_ctl</c> from Debian's postgresql package into a temp directory, its own port and
/// its own Unix socket directory, so the machine's cluster is never touched. Run as the
/// <c>postgres</c> user when the tests run as root (the server refuses root). Started on the
/// first <see cref="CreateDatabaseAsync"/>, after <see cref="Requires.Program"/>: without
/// PostgreSQL the test skips (fails under CI) instead of the fixture throwing.
/// <para>
/// Local (socket) connections are trusted; TCP on 127.0.0.1 asks for a password
/// (scram-sha-256), so tests can exercise password handling. Role <see cref="User"/> has
/// password <see cref="Password"/> and may create databases.
/// </para>
/// </summary>
public sealed class PostgresCluster : IAsyncDisposable
{
    public const string User = "postgrey";
    public const string Password = "s3cret-for-tests";

    private readonly SemaphoreSlim _startLock = new(1, 1);
    private string? _bin;
    private string? _root;
    private bool _running;
    private int _databases;

    public int Port { get; private set; }

    /// <summary>true: fsync and synchronous commit on, as a production server (for the benchmark);
    /// false (tests): off, since no test crashes the machine.</summary>
    public bool Durable { get; init; }

    /// <summary>Directory of the server's Unix socket.</summary>
    public string SocketDirectory => Path.Combine(_root!, "sock");

    public string DataDirectory => Path.Combine(_root!, "data");

    public string LogFile => Path.Combine(_root!, "server.log");

    /// <summary>/usr/lib/postgresql/N/bin of the newest installed major, or null.</summary>
    public static string? FindBin()
    {
        const string Root = "/usr/lib/postgresql";
        if (!Directory.Exists(Root))
        {
            return null;
        }
        return Directory.GetDirectories(Root)
            .Select(d => (Dir: d, Major: int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int m) ? m : -1))
            .Where(x => x.Major > 0 && File.Exists(Path.Combine(x.Dir, "bin", "initdb")))
            .OrderByDescending(x => x.Major)
            .Select(x => Path.Combine(x.Dir, "bin"))
            .FirstOrDefault();
    }

    /// <summary>Skips (fails under CI) when PostgreSQL is not installed.</summary>
    public static void Require() =>
        Requires.Program(FindBin() is { } bin ? Path.Combine(bin, "initdb") : "/usr/lib/postgresql/15/bin/initdb", "postgresql");

    /// <summary>A new empty database owned by <see cref="User"/>; returns its name.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        await StartAsync();
        string name = "t" + Interlocked.Increment(ref _databases).ToString(CultureInfo.InvariantCulture) + "_" + Guid.NewGuid().ToString("N")[..8];
        await PsqlAsync($"CREATE DATABASE {name} OWNER {User}");
        return name;
    }

    /// <summary>URI over the Unix socket (trusted: no password).</summary>
    public string SocketUri(string database) => $"postgresql://{User}@{Uri.EscapeDataString(SocketDirectory)}:{Port}/{database}";

    /// <summary>URI over TCP on 127.0.0.1 (a password is asked for), without the password.</summary>
    public string TcpUri(string database) => $"postgresql://{User}@127.0.0.1:{Port}/{database}";

    public async Task StartAsync()
    {
        Require();
        await _startLock.WaitAsync();
        try
        {
            if (_root is null)
            {
                await InitAsync();
            }
            if (!_running)
            {
                await ServerUpAsync();
            }
        }
        finally
        {
            _startLock.Release();
        }
    }

    private async Task InitAsync()
    {
        _bin = FindBin()!;
        _root = Path.Combine(Path.GetTempPath(), "pgc-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_root);
        Directory.CreateDirectory(SocketDirectory);
        Port = PolicyServerProcess.FreePort();
        string pwfile = Path.Combine(_root, "pw");
        await File.WriteAllTextAsync(pwfile, Password + "\n");
        if (Requires.IsRoot)
        {
            await RunAsync("chown", ["-R", "postgres:postgres", _root]);
        }
        await RunAsPostgresAsync(Path.Combine(_bin, "initdb"),
        [
            "-D", DataDirectory, "-U", "postgres", "--pwfile", pwfile,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ]);
        string durability = Durable ? "on" : "off";
        await File.AppendAllTextAsync(Path.Combine(DataDirectory, "postgresql.conf"),
            $"""

            port = {Port}
            listen_addresses = '127.0.0.1'
            unix_socket_directories = '{SocketDirectory}'
            fsync = {durability}
            synchronous_commit = {durability}
            full_page_writes = {durability}
            max_connections = 100
            shared_buffers = 32MB
            """);
        await ServerUpAsync();
        await PsqlAsync($"CREATE ROLE {User} LOGIN CREATEDB PASSWORD '{Password}'");
    }

    private async Task ServerUpAsync()
    {
        await RunAsPostgresAsync(Path.Combine(_bin!, "pg_ctl"), ["-D", DataDirectory, "-l", LogFile, "-w", "-t", "60", "start"]);
        _running = true;
    }

    /// <summary>Stops the server (fast: sessions are ended, as at a shutdown of the machine).</summary>
    public async Task StopAsync()
    {
        await RunAsPostgresAsync(Path.Combine(_bin!, "pg_ctl"), ["-D", DataDirectory, "-m", "fast", "-w", "-t", "60", "stop"]);
        _running = false;
    }

    /// <summary>
    /// Kills the postmaster with SIGKILL, as the OOM killer or a crash would: no shutdown
    /// checkpoint, sessions cut. Waits until its children are gone too (they exit once they notice
    /// their parent died), so that <see cref="StartAsync"/> can start it again (with crash recovery).
    /// </summary>
    public async Task KillAsync()
    {
        int pid = int.Parse(File.ReadLines(Path.Combine(DataDirectory, "postmaster.pid")).First(), CultureInfo.InvariantCulture);
        int[] children = ChildrenOf(pid);
        using (var postmaster = Process.GetProcessById(pid))
        {
            postmaster.Kill(); // SIGKILL
            await postmaster.WaitForExitAsync();
        }
        _running = false;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (children.Any(IsAlive))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the children of the killed postmaster {pid} are still running after 60 s");
            }
            await Task.Delay(50);
        }
    }

    private static int[] ChildrenOf(int parent) =>
        [.. Directory.GetDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int p) ? p : 0)
            .Where(p => p > 0 && StatField(p, 1) == parent.ToString(CultureInfo.InvariantCulture))];

    // A zombie nobody reaped has let go of the shared memory: gone, as far as a restart cares.
    private static bool IsAlive(int pid) => StatField(pid, 0) is { } state && state != "Z";

    /// <summary>Field <paramref name="index"/> of /proc/PID/stat after the command name (0: state, 1: parent), or null once it is gone.</summary>
    private static string? StatField(int pid, int index)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields[index];
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Runs SQL as the superuser over the socket; returns psql's unaligned output.</summary>
    public Task<string> PsqlAsync(string sql, string database = "postgres") =>
        RunAsPostgresAsync(Path.Combine(_bin!, "psql"),
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", SocketDirectory, "-p", Port.ToString(CultureInfo.InvariantCulture), "-U", "postgres", "-d", database, "-c", sql]);

    public async Task<long> ScalarAsync(string sql, string database) =>
        long.Parse((await PsqlAsync(sql, database)).Trim(), CultureInfo.InvariantCulture);

    private static Task<string> RunAsPostgresAsync(string program, IReadOnlyList<string> args) =>
        Requires.IsRoot ? RunAsync("runuser", ["-u", "postgres", "--", program, .. args]) : RunAsync(program, args);

    private static async Task<string> RunAsync(string program, IReadOnlyList<string> args)
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = "/",
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', args)} exited with {process.ExitCode}:\n{await stdout}\n{await stderr}");
        }
        return await stdout;
    }

    public async ValueTask DisposeAsync()
    {
        if (_root is null)
        {
            return;
        }
        try
        {
            if (_running)
            {
                await RunAsPostgresAsync(Path.Combine(_bin!, "pg_ctl"), ["-D", DataDirectory, "-m", "immediate", "-w", "stop"]);
            }
        }
        catch (InvalidOperationException)
        {
            // already stopped
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
        _startLock.Dispose();
    }
}
