namespace Postgrey.Testing;

/// <summary>Where the built postgrey.dll of src/Postgrey is, in the tests' own configuration.</summary>
public static class BuiltPostgrey
{
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
