using System.Globalization;

namespace Postgrey.Platform;

/// <summary>
/// --pidfile. Claimed before anything is opened: a pid file of a process that still runs stops
/// the start (two daemons on one database would be worse), a stale one (its process is gone,
/// or it holds no number) is replaced. Written once the service serves; removed at exit if it
/// still holds our pid.
/// </summary>
internal sealed class PidFile : IDisposable
{
    private readonly string _path;
    private bool _written;

    private PidFile(string path) => _path = path;

    public string Path => _path;

    public static PidFile Claim(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (File.Exists(full) && ReadPid(full) is int pid && pid != Environment.ProcessId && IsRunning(pid))
        {
            throw new IOException($"pid file {full}: process {pid} is still running");
        }
        return new PidFile(full);
    }

    /// <summary>Writes our pid (replacing the file atomically), mode 0644 as pid files are.</summary>
    public void Write()
    {
        string temp = _path + ".tmp";
        File.WriteAllText(temp, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
        File.Move(temp, _path, overwrite: true);
        _written = true;
    }

    private static int? ReadPid(string path)
    {
        try
        {
            string text = File.ReadAllText(path).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static bool IsRunning(int pid)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        // kill(pid, 0): 0 or EPERM means the process exists.
        return Libc.Kill(pid, 0) == 0 || Libc.LastError != Libc.ErrorNoSuchProcess;
    }

    public void Dispose()
    {
        if (!_written)
        {
            return;
        }
        try
        {
            if (ReadPid(_path) == Environment.ProcessId)
            {
                File.Delete(_path);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // after the privilege drop the directory (/run) may not be ours: a stale file is harmless
        }
    }
}
