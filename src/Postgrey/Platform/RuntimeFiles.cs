using System.Reflection;
using System.Runtime.Loader;

namespace Postgrey.Platform;

/// <summary>
/// .NET loads an assembly the first time code needs it, which for the host's start, the
/// reload or the stop is after the privilege drop. A program directory the account cannot
/// read (a clone in root's home, a 0700 install directory) then fails at that moment, with
/// the service half started. So, before the drop, every assembly of the program's own
/// directory is loaded (mapped: the file is not opened again), and a .NET runtime the account
/// cannot read is refused with the reason, as its native libraries also load lazily.
/// </summary>
internal static class RuntimeFiles
{
    /// <summary>Throws with the reason when the account could not read the runtime itself.</summary>
    public static void CheckRuntimeReadable(ServiceAccount account)
    {
        ArgumentNullException.ThrowIfNull(account);
        // From the host's list, not Assembly.Location: that is an error in the Native AOT build.
        string? coreLib = TrustedAssemblies().FirstOrDefault(p => Path.GetFileName(p) == "System.Private.CoreLib.dll");
        if (coreLib is null)
        {
            return; // Native AOT: everything is in the executable, already mapped
        }
        string runtime = Path.GetDirectoryName(coreLib)!;
        if (Unreadable(runtime, account) is { } blocked)
        {
            throw new IOException($"the .NET runtime in {runtime} is not readable by {account.User} ({blocked}); "
                + "it loads parts of it after the switch: install .NET where every user can read it, or give --user=root");
        }
    }

    /// <summary>Loads every managed assembly of the program's directory that is not loaded yet.</summary>
    public static void LoadProgramAssemblies()
    {
        string[] trusted = TrustedAssemblies();
        if (trusted.Length == 0)
        {
            // Native AOT: nothing loads later. (Its satellite resource assemblies carry cultures
            // that AssemblyName cannot even be asked about under invariant globalization.)
            return;
        }
        string own = AppContext.BaseDirectory;
        var loaded = AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetName().Name).ToHashSet(StringComparer.Ordinal);
        foreach (string path in trusted)
        {
            if (!path.StartsWith(own, StringComparison.Ordinal) || loaded.Contains(Path.GetFileNameWithoutExtension(path)))
            {
                continue;
            }
            try
            {
                _ = AssemblyLoadContext.Default.LoadFromAssemblyName(AssemblyName.GetAssemblyName(path));
            }
            catch (BadImageFormatException)
            {
                // not a managed assembly: nothing to load
            }
        }
    }

    /// <summary>Every assembly the host resolved at start (none in the Native AOT build).</summary>
    private static string[] TrustedAssemblies() =>
        AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES") is string list ? list.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries) : [];

    /// <summary>The first directory on the way to <paramref name="directory"/> (itself included)
    /// that the account may not enter, by the permission bits, or null.</summary>
    private static string? Unreadable(string directory, ServiceAccount account)
    {
        for (string? dir = directory; dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (Libc.Describe(Libc.CurrentDirectory, dir + "/.") is not { } facts)
            {
                return $"{dir}: {Libc.LastErrorMessage}";
            }
            // r-x for the class the account falls in: owner, group, or other.
            uint shift = facts.Uid == account.Uid ? 6u : facts.Gid == account.Gid ? 3u : 0u;
            if (((facts.Permissions >> (int)shift) & 5) != 5)
            {
                return $"{dir} is mode {Convert.ToString(facts.Permissions & 0x1FF, 8)}, owner uid {facts.Uid}";
            }
        }
        return null;
    }
}
