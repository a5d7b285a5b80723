using System.Diagnostics;
using System.Globalization;

namespace Postgrey.Tests.Attacks;

/// <summary>What an attack test plants and then checks: owners (by number, from stat(1)),
/// links, and root's files that must come out of it untouched.</summary>
internal static class AttackFiles
{
    public const string Nobody = "65534";

    /// <summary>"uid:gid" of <paramref name="path"/> itself (a link is not followed).</summary>
    public static string Owner(string path) => Stat("%u:%g", path);

    /// <summary>Octal permissions of <paramref name="path"/> itself.</summary>
    public static string Mode(string path) => Stat("%a", path);

    /// <summary>What <paramref name="path"/> is, as stat(1) says: "regular file", "socket", "symbolic link".</summary>
    public static string Kind(string path) => Stat("%F", path);

    /// <summary>chown -h: the owner of the path itself, as the account that planted it.</summary>
    public static void GiveToNobody(string path) => Run("chown", "-h", $"{Nobody}:{Nobody}", path);

    public static void HardLink(string target, string link) => Run("ln", target, link);

    /// <summary>A file of root's, mode 0600, the target of a planted link.</summary>
    public static string RootSecret(string path)
    {
        File.WriteAllText(path, "root's secret\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    /// <summary>Fails unless <paramref name="path"/> is still root's, mode 600, with its content.</summary>
    public static void AssertUntouched(string path)
    {
        Xunit.Assert.Equal("0:0", Owner(path));
        Xunit.Assert.Equal("600", Mode(path));
        Xunit.Assert.Equal("root's secret\n", File.ReadAllText(path));
    }

    private static string Stat(string format, string path) => Run("stat", "-c", format, path).Trim();

    private static string Run(string program, params string[] args)
    {
        using var process = Process.Start(new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(10_000) || process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} {string.Join(' ', args)}: {error}");
        }
        return output;
    }

    public static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}
