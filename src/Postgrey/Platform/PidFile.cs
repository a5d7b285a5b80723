using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;

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

    /// <summary>Writes our pid, mode 0644 as pid files are, owned by <paramref name="owner"/> (the
    /// service account, as Net::Server chowns it) when given. The new content goes to a file of a
    /// random name created here exclusively and without following links, its owner changed
    /// through its descriptor, then renamed over the pid file: whoever may write the pid file's
    /// directory cannot make root write or give away another file by a planted link.</summary>
    public void Write(ServiceAccount? owner = null)
    {
        byte[] content = Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        if (!OperatingSystem.IsLinux())
        {
            File.WriteAllBytes(_path, content);
            _written = true;
            return;
        }
        string directory = System.IO.Path.GetDirectoryName(_path)!;
        string temp;
        int fd;
        int attempts = 0;
        do
        {
            temp = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(_path)}.{Guid.NewGuid():N}");
            fd = Libc.OpenAt(Libc.CurrentDirectory, temp, Libc.OpenWriteOnly | Libc.OpenCreate | Libc.OpenExclusive | Libc.OpenNoFollow | Libc.OpenCloseOnExec, 0x1A4);
        }
        while (fd < 0 && Libc.LastError == Libc.ErrorExists && ++attempts < 10);
        if (fd < 0)
        {
            throw new IOException($"can't write pid file {_path}: {Libc.LastErrorMessage}");
        }
        bool moved = false;
        try
        {
            using (var stream = new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 0))
            {
                stream.Write(content);
                // umask 077 applies to open(2)'s mode; pid files are read by everyone.
                if (Libc.ChangeMode(fd, 0x1A4) != 0 || (owner is not null && Libc.ChangeOwner(fd, owner.Uid, owner.Gid) != 0))
                {
                    throw new IOException($"can't write pid file {_path}: {Libc.LastErrorMessage}");
                }
            }
            File.Move(temp, _path, overwrite: true); // rename(2): replaces a link, never follows it
            moved = true;
        }
        finally
        {
            if (!moved)
            {
                File.Delete(temp);
            }
        }
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
