using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Postgrey.Testing;

/// <summary>A policy server run as a child process (ours or the real postgrey), its output
/// collected line by line.</summary>
public sealed class PolicyServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly bool _stopGracefully;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private PolicyServerProcess(Process process, bool stopGracefully)
    {
        _process = process;
        _stopGracefully = stopGracefully;
    }

    public int Pid => _process.Id;

    public IReadOnlyList<string> Lines => _lines.ToArray();

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    /// <summary>Starts <paramref name="fileName"/>. At dispose it gets SIGTERM and 15 s to exit when
    /// <paramref name="stopGracefully"/>, else SIGKILL at once (postgrey does not always exit on TERM).</summary>
    public static PolicyServerProcess Start(string fileName, IEnumerable<string> args, bool stopGracefully = true, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        info.Environment.Remove("INVOCATION_ID"); // never look like a systemd service
        info.Environment.Remove("NOTIFY_SOCKET");
        info.Environment.Remove("JOURNAL_STREAM");
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var result = new PolicyServerProcess(process, stopGracefully);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { result._lines.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { result._lines.Enqueue(e.Data); } };
        process.Exited += (_, _) => result._exited.TrySetResult();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return result;
    }

    private const int FirstTestPort = 20000;
    private const int TestPorts = 12000; // 20000-31999: below Linux's ephemeral range (32768-)

    /// <summary>
    /// A TCP port that is free now on 127.0.0.1 and that no other call hands out soon, also in
    /// other test processes: the test assemblies run in parallel, and a port the kernel gave
    /// one of them for a probe (bind to port 0) could be given to another before the first
    /// one's server bound it; the second server then fails to bind, and its test talks to the
    /// first one's server. A counter in a locked file below the ephemeral range avoids that.
    /// </summary>
    public static int FreePort()
    {
        // One counter per user: another user's file (root's, say) in the shared /tmp is not ours to write.
        string path = Path.Combine(Path.GetTempPath(), $"postgrey-tests.{Environment.UserName}.ports");
        while (true)
        {
            FileStream counter;
            try
            {
                // FileShare.None is an exclusive flock(2) on Unix: one caller at a time.
                counter = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                Thread.Sleep(5);
                continue;
            }
            using (counter)
            {
                using var reader = new StreamReader(counter, leaveOpen: true);
                int last = int.TryParse(reader.ReadToEnd().Trim(), out int n) ? n : Environment.ProcessId % TestPorts;
                for (int i = 1; i <= TestPorts; i++)
                {
                    int candidate = (last + i) % TestPorts;
                    if (IsFree(FirstTestPort + candidate))
                    {
                        counter.SetLength(0);
                        using var writer = new StreamWriter(counter, leaveOpen: true);
                        writer.Write(candidate);
                        return FirstTestPort + candidate;
                    }
                }
                throw new IOException($"no free TCP port in {FirstTestPort}-{FirstTestPort + TestPorts - 1}");
            }
        }
    }

    private static bool IsFree(int port)
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, port));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Waits until the server accepts connections on <paramref name="endPoint"/>.</summary>
    public async Task WaitUntilListeningAsync(EndPoint endPoint, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (_process.HasExited)
            {
                _process.WaitForExit();
                throw new InvalidOperationException($"{_process.StartInfo.FileName} exited with {_process.ExitCode}:\n{string.Join('\n', _lines)}");
            }
            try
            {
                await using var client = await PolicyClient.ConnectAsync(endPoint);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
        }
    }

    public async Task WaitForExitAsync(TimeSpan timeout)
    {
        await _exited.Task.WaitAsync(timeout);
        _process.WaitForExit(); // drain the output
    }

    /// <summary>Waits for an output line that matches, and returns it.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (DateTime.UtcNow < deadline)
        {
            if (_lines.FirstOrDefault(match) is { } line)
            {
                return line;
            }
            if (_process.HasExited)
            {
                _process.WaitForExit();
                return _lines.FirstOrDefault(match)
                    ?? throw new InvalidOperationException($"{_process.StartInfo.FileName} exited ({_process.ExitCode}):\n{string.Join('\n', _lines)}");
            }
            await Task.Delay(20);
        }
        throw new TimeoutException($"no such line within the timeout:\n{string.Join('\n', _lines)}");
    }

    public void Signal(string signal)
    {
        using var kill = Process.Start("kill", ["-" + signal, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public void KillHard() => _process.Kill(); // SIGKILL

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited && _stopGracefully)
        {
            Signal("TERM");
            try
            {
                await WaitForExitAsync(TimeSpan.FromSeconds(15));
            }
            catch (TimeoutException)
            {
            }
        }
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
