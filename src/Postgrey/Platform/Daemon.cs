using System.Diagnostics;

namespace Postgrey.Platform;

/// <summary>
/// -d/--daemonize. A .NET process cannot fork, so the foreground process starts a copy of
/// itself as the daemon, relays what it writes to stderr while it starts (an error such as
/// "locked" still reaches the admin's terminal), and exits 0 once the daemon says it serves,
/// or with the daemon's exit code if it could not start. The daemon becomes a session leader
/// (no controlling terminal) and, once serving, points its standard descriptors at /dev/null.
/// </summary>
internal static class Daemon
{
    private const string ChildVariable = "POSTGREY_DAEMON_CHILD";
    private const string ReadyLine = "postgrey-daemon-ready";

    /// <summary>True in the started copy.</summary>
    public static bool IsDaemon => Environment.GetEnvironmentVariable(ChildVariable) == "1";

    /// <summary>Runs in the foreground process: starts the daemon and waits until it serves.</summary>
    public static int Launch(IReadOnlyList<string> args)
    {
        var info = new ProcessStartInfo(Environment.ProcessPath ?? throw new InvalidOperationException("own executable unknown"))
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        // Under `dotnet postgrey.dll` the executable is dotnet: pass the dll first.
        if (Path.GetFileNameWithoutExtension(info.FileName).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            info.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        }
        foreach (string arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        info.Environment[ChildVariable] = "1";

        if (OperatingSystem.IsLinux())
        {
            // Inherited across exec, unlike a handler: a hangup of the terminal before the daemon
            // has its own handlers and its own session cannot end it.
            Libc.IgnoreHangUp();
        }
        using var child = Process.Start(info) ?? throw new InvalidOperationException("the daemon could not be started");
        child.StandardInput.Close();
        var relay = new Thread(() =>
        {
            string? line;
            while ((line = child.StandardError.ReadLine()) is not null)
            {
                Console.Error.WriteLine(line);
            }
        }) { IsBackground = true };
        relay.Start();
        string? said;
        while ((said = child.StandardOutput.ReadLine()) is not null)
        {
            if (said == ReadyLine)
            {
                return 0; // it serves; it carries on alone
            }
        }
        child.WaitForExit();
        relay.Join(TimeSpan.FromSeconds(5));
        return child.ExitCode == 0 ? 1 : child.ExitCode;
    }

    /// <summary>In the daemon, first thing: a session of its own, so no terminal's hangup reaches it.</summary>
    public static void StartSession()
    {
        if (OperatingSystem.IsLinux() && Libc.SetSessionId() < 0)
        {
            throw new InvalidOperationException("setsid failed: " + Libc.LastErrorMessage);
        }
    }

    /// <summary>In the daemon, once it serves: tells the foreground process, then lets go of the
    /// pipes to it (stdin, stdout and stderr become /dev/null).</summary>
    public static void Detach()
    {
        Console.Out.WriteLine(ReadyLine);
        Console.Out.Flush();
        Console.Error.Flush();
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        int devNull = Libc.Open("/dev/null", Libc.OpenReadWrite);
        if (devNull < 0)
        {
            return;
        }
        for (int fd = 0; fd <= 2; fd++)
        {
            _ = Libc.Dup2(devNull, fd);
        }
        if (devNull > 2)
        {
            _ = Libc.Close(devNull);
        }
    }
}
