using System.Diagnostics;

namespace Postgrey.Testing;

/// <summary>Runs a program to its end (at most 2 minutes): its exit code, stdout and stderr apart.</summary>
public static class ToolProcess
{
    public static (int ExitCode, string Stdout, string Stderr) Run(string file, IEnumerable<string> args, string? stdin = null)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        // Threads, not tasks: the analyzers forbid waiting on a task here, and both pipes must be
        // drained while the other fills.
        string stdout = "", stderr = "";
        var readOut = new Thread(() => stdout = process.StandardOutput.ReadToEnd());
        var readErr = new Thread(() => stderr = process.StandardError.ReadToEnd());
        readOut.Start();
        readErr.Start();
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }
        if (!process.WaitForExit(TimeSpan.FromSeconds(120)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish");
        }
        readOut.Join();
        readErr.Join();
        return (process.ExitCode, stdout, stderr);
    }
}
