namespace Postgrey.Testing;

/// <summary>Where the built postgrey.dll of src/Postgrey is, in the tests' own configuration.</summary>
public static class BuiltPostgrey
{
    public static bool IsRoot => Requires.IsRoot;

    /// <summary>Starts ours with <paramref name="args"/>. Started as root, postgrey (and ours) would
    /// switch to the postgrey user, who cannot read the tests' private temp dirs; the tests that
    /// are not about that say --user=root.</summary>
    public static PolicyServerProcess Start(IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        string[] all = [.. args];
        string[] runAs = IsRoot && !all.Any(a => a.StartsWith("--user", StringComparison.Ordinal)) ? ["--user=root"] : [];
        return PolicyServerProcess.Start("dotnet", [DllPath, .. all, .. runAs], environment: environment);
    }

    /// <summary>Runs the built postgrey.dll to its end (at most 2 minutes): its exit code, stdout
    /// and stderr apart.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(params string[] args) => ToolProcess.Run("dotnet", [DllPath, .. args]);

    public static string DllPath
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            string configuration = dir.Parent!.Name; // .../bin/<Configuration>/net10.0/
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Postgrey.sln")))
            {
                dir = dir.Parent;
            }
            if (dir is null)
            {
                throw new InvalidOperationException("Postgrey.sln not found above " + AppContext.BaseDirectory);
            }
            string path = Path.Combine(dir.FullName, "src", "Postgrey", "bin", configuration, "net10.0", "postgrey.dll");
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{path} is not built", path);
            }
            return path;
        }
    }
}
