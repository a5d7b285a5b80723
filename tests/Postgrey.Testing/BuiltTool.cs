using System.Diagnostics;

namespace Postgrey.Testing;

/// <summary>Runs the built postgrey.dll as a tool (<c>postgrey db copy ...</c>) to its end: exit code, stdout and stderr apart.</summary>
public static class BuiltTool
{
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(BuiltPostgrey.DllPath);
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }
        using var process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"postgrey {string.Join(' ', args)} did not finish in 180 s");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
