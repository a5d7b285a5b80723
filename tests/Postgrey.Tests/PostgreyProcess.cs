using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>The real postgrey executable (the built postgrey.dll) as a child process, its
/// output collected line by line.</summary>
internal sealed partial class PostgreyProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private PostgreyProcess(Process process)
    {
        _process = process;
    }

    public int Pid => _process.Id;

    public IReadOnlyList<string> Lines => _lines.ToArray();

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public static string DllPath => BuiltPostgrey.DllPath;

    public static PostgreyProcess Start(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(DllPath);
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        info.Environment.Remove("INVOCATION_ID"); // never look like a systemd service
        info.Environment.Remove("NOTIFY_SOCKET");
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var result = new PostgreyProcess(process);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { result._lines.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { result._lines.Enqueue(e.Data); } };
        process.Exited += (_, _) => result._exited.TrySetResult();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return result;
    }

    /// <summary>Runs to the end and returns the exit code and every line.</summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(params string[] args)
    {
        await using var process = Start(args);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, string.Join('\n', process.Lines));
    }

    public async Task WaitForExitAsync(TimeSpan timeout)
    {
        await _exited.Task.WaitAsync(timeout);
        _process.WaitForExit(); // drain the output
    }

    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (DateTime.UtcNow < deadline)
        {
            foreach (string line in _lines)
            {
                if (match(line))
                {
                    return line;
                }
            }
            if (_process.HasExited)
            {
                _process.WaitForExit();
                string? late = _lines.FirstOrDefault(match);
                if (late is not null)
                {
                    return late;
                }
                throw new InvalidOperationException($"postgrey exited ({_process.ExitCode}):\n{string.Join('\n', _lines)}");
            }
            await Task.Delay(20);
        }
        throw new TimeoutException($"no such line within the timeout:\n{string.Join('\n', _lines)}");
    }

    /// <summary>Waits for "listening on 127.0.0.1:PORT" and returns that endpoint.</summary>
    public async Task<IPEndPoint> WaitForTcpAsync()
    {
        string line = await WaitForLineAsync(l => ListeningTcp().IsMatch(l));
        return IPEndPoint.Parse(ListeningTcp().Match(line).Groups[1].Value);
    }

    public async Task WaitForUnixAsync(string path) =>
        await WaitForLineAsync(l => l == "listening on unix:" + path);

    public void Signal(string signal)
    {
        using var kill = Process.Start("kill", ["-" + signal, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    public void KillHard() => _process.Kill(); // SIGKILL

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            Signal("TERM");
            try
            {
                await WaitForExitAsync(TimeSpan.FromSeconds(15));
            }
            catch (TimeoutException)
            {
                _process.Kill();
            }
        }
        _process.Dispose();
    }

    [GeneratedRegex(@"^listening on (127\.0\.0\.1:\d+)$")]
    private static partial Regex ListeningTcp();
}
