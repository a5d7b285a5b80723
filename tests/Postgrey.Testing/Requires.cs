using Xunit;

namespace Postgrey.Testing;

/// <summary>
/// Prerequisites of the tests that need more than the .NET SDK: root, or a program from
/// Debian's packages. On a developer's machine a missing one makes the test report itself
/// skipped with the reason. Under CI (<c>CI=true</c>), where <c>.ci/run</c> installs
/// everything, a missing one fails the test instead: CI runs every test or goes red.
/// </summary>
public static class Requires
{
    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static bool IsRoot => OperatingSystem.IsLinux() && Environment.UserName == "root";

    /// <summary>The test starts processes as root, changes owners or drops privileges.</summary>
    public static void Root(string why)
    {
        if (!IsRoot)
        {
            Missing($"needs root ({why})");
        }
    }

    /// <summary>An executable at <paramref name="path"/>, from the Debian package <paramref name="package"/>.</summary>
    public static void Program(string path, string package)
    {
        if (!File.Exists(path))
        {
            Missing($"{path} is missing: apt-get install {package}");
        }
    }

    /// <summary>A test that only means something on Linux (epoll, signals, /proc, Unix owners).</summary>
    public static void Linux()
    {
        if (!OperatingSystem.IsLinux())
        {
            Missing("runs on Linux only");
        }
    }

    private static void Missing(string reason)
    {
        if (InCi)
        {
            Assert.Fail($"CI=true: {reason}; .ci/run installs and runs everything, so this is a failure, not a skip");
        }
        Assert.Skip(reason);
    }
}
