using Postgrey.Testing;

[assembly: AssemblyFixture(typeof(Postgrey.Migration.Tests.PostgreyRuns))]

namespace Postgrey.Migration.Tests;

/// <summary>
/// The dbdirs that Debian's postgrey left after <see cref="Fixtures.Load"/>, one per flag set,
/// made once for all tests (a run with the bulk load takes seconds). Tests read them; a test
/// that damages or writes files copies them first (<see cref="CopyTo"/>).
/// </summary>
public sealed class PostgreyRuns : IDisposable
{
    public const int Bulk = 1500;

    private readonly TempDirectory _dir = new();
    private readonly Dictionary<string, Task<string>> _runs = [];

    /// <summary>postgrey's dbdir after the load with <paramref name="flagSet"/>'s flags.</summary>
    public Task<string> DbdirAsync(string flagSet)
    {
        Requires.Program(Fixtures.RealPostgrey, "postgrey");
        Requires.Program(Fixtures.DbDumpPath, "db-util");
        lock (_runs)
        {
            if (!_runs.TryGetValue(flagSet, out Task<string>? run))
            {
                run = RunAsync(flagSet);
                _runs.Add(flagSet, run);
            }
            return run;
        }
    }

    private async Task<string> RunAsync(string flagSet)
    {
        string dbdir = _dir.File(flagSet);
        await Fixtures.RunPostgreyAsync(dbdir, Fixtures.FlagSets[flagSet], Fixtures.Load(flagSet == "default" ? Bulk : 200));
        return dbdir;
    }

    /// <summary>Copies postgrey's two database files (not its environment) into <paramref name="target"/>.</summary>
    public static void CopyTo(string dbdir, string target)
    {
        Directory.CreateDirectory(target);
        foreach (string name in new[] { PostgreyDatabase.TripletsFileName, PostgreyDatabase.ClientsFileName })
        {
            string source = Path.Combine(dbdir, name);
            if (File.Exists(source))
            {
                File.Copy(source, Path.Combine(target, name), overwrite: true);
            }
        }
    }

    public void Dispose() => _dir.Dispose();
}
