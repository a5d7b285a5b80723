using System.Diagnostics;
using Postgrey.Testing;

namespace Postgrey.EndToEnd;

/// <summary>Runs a command to completion and returns its exit code and output.</summary>
internal static class Tools
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start " + file);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    public static async Task<string> CheckedAsync(string file, params string[] args)
    {
        var (code, output) = await RunAsync(file, args);
        if (code != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited with {code}:\n{output}");
        }
        return output;
    }

    /// <summary>A private Postfix instance needs root, postfix and swaks: skipped without them
    /// (a failure under CI, which installs them).</summary>
    public static void Require()
    {
        Requires.Program("/usr/sbin/postfix", "postfix");
        Requires.Program("/usr/bin/swaks", "swaks");
        Requires.Root("it starts a private Postfix instance");
    }
}
