using System.Net;
using System.Text.RegularExpressions;
using Postgrey.Testing;

namespace Postgrey.Tests;

/// <summary>The built postgrey.dll started as a child process.</summary>
internal static partial class PostgreyProcess
{
    public static PolicyServerProcess Start(params string[] args) => BuiltPostgrey.Start(args);

    public static PolicyServerProcess StartWith(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        BuiltPostgrey.Start(args, environment);

    /// <summary>Runs to the end and returns the exit code and every line.</summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(params string[] args)
    {
        await using var process = Start(args);
        await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, string.Join('\n', process.Lines));
    }

    /// <summary>Waits for "listening on 127.0.0.1:PORT" and returns that endpoint.</summary>
    public static async Task<IPEndPoint> WaitForTcpAsync(this PolicyServerProcess process)
    {
        string line = await process.WaitForLineAsync(l => ListeningTcp().IsMatch(l));
        return IPEndPoint.Parse(ListeningTcp().Match(line).Groups[1].Value);
    }

    public static async Task WaitForUnixAsync(this PolicyServerProcess process, string path) =>
        await process.WaitForLineAsync(l => l == "listening on unix:" + path);

    [GeneratedRegex(@"^listening on (127\.0\.0\.1:\d+)$")]
    private static partial Regex ListeningTcp();
}
