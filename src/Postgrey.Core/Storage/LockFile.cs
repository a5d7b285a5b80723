using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Postgrey.Core.Storage;

/// <summary>
/// postgrey.lock: one instance per dbdir, by an exclusive flock(2) as postgrey takes it. On
/// Linux it is opened without following a link (the dbdir belongs to the service account, and
/// a root start must not open, create or lock a file elsewhere through one it planted), and
/// each failure says what it is: another instance holding it, or a lock file that cannot be
/// created or opened, and why. Every store takes it, and so do the tools that write a dbdir.
/// </summary>
public static partial class LockFile
{
    private const int ErrorWouldBlock = 11; // EWOULDBLOCK
    private const int ErrorLoop = 40; // ELOOP: the last component is a link (O_NOFOLLOW)
    private const int LockExclusive = 2; // LOCK_EX
    private const int LockNonBlocking = 4; // LOCK_NB

    public static FileStream Acquire(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return AcquirePortable(path);
        }
        bool arm64 = RuntimeInformation.ProcessArchitecture == Architecture.Arm64;
        int flags = 2 /* O_RDWR */ | 0x40 /* O_CREAT */ | 0x80000 /* O_CLOEXEC */ | (arm64 ? 0x8000 : 0x20000) /* O_NOFOLLOW */;
        int fd = Open(path, flags, 0x180 /* 0600 */);
        if (fd < 0)
        {
            int error = Marshal.GetLastPInvokeError();
            throw new LockFileException(path, error == ErrorLoop
                ? $"the lock file {path} is a symbolic link: refusing to follow it (remove it)"
                : $"can't create or open the lock file {path}: {Marshal.GetPInvokeErrorMessage(error)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Flock(fd, LockExclusive | LockNonBlocking) != 0)
        {
            int error = Marshal.GetLastPInvokeError();
            handle.Dispose();
            if (error == ErrorWouldBlock)
            {
                throw new StoreLockedException(path);
            }
            throw new LockFileException(path, $"can't lock {path}: {Marshal.GetPInvokeErrorMessage(error)}");
        }
        return new FileStream(handle, FileAccess.ReadWrite, bufferSize: 0);
    }

    private static FileStream AcquirePortable(string path)
    {
        var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        try
        {
            // FileShare.None is an exclusive flock(2) on Unix and a sharing violation on Windows.
            return new FileStream(path, options);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new LockFileException(path, $"can't create or open the lock file {path}: {ex.Message}");
        }
        catch (IOException ex) when (ex is not FileNotFoundException and not DirectoryNotFoundException && File.Exists(path))
        {
            throw new StoreLockedException(path);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(int fd, int operation);
}

/// <summary>postgrey.lock cannot be created, opened or locked (a read-only or foreign dbdir, a link).</summary>
public sealed class LockFileException(string path, string message) : IOException(message)
{
    public string LockPath { get; } = path;
}

/// <summary>Another process holds postgrey.lock in the same dbdir.</summary>
public sealed class StoreLockedException(string path) : IOException($"locked: {path}")
{
    public string LockPath { get; } = path;
}
