using System.Runtime.InteropServices;

namespace Postgrey.Platform;

/// <summary>
/// The few POSIX calls .NET has no managed form of: identity, privilege drop, sessions,
/// descriptors. Linux (glibc/musl x86-64 and arm64) layouts; every caller checks
/// <see cref="OperatingSystem.IsLinux"/> first.
/// </summary>
internal static partial class Libc
{
    private const string Library = "libc";

    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint GetEffectiveUserId();

    [LibraryImport(Library, EntryPoint = "setuid", SetLastError = true)]
    public static partial int SetUserId(uint uid);

    [LibraryImport(Library, EntryPoint = "setgid", SetLastError = true)]
    public static partial int SetGroupId(uint gid);

    [LibraryImport(Library, EntryPoint = "setgroups", SetLastError = true)]
    public static partial int SetGroups(nuint size, [In] uint[] list);

    [LibraryImport(Library, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int ChangeOwner(string path, uint uid, uint gid);

    [LibraryImport(Library, EntryPoint = "umask")]
    public static partial uint SetUmask(uint mask);

    [LibraryImport(Library, EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSessionId();

    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Library, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags);

    [LibraryImport(Library, EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(int oldFd, int newFd);

    [LibraryImport(Library, EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport(Library, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int command, int argument);

    /// <summary>Ends the process at once: no finalizers, no shutdown handlers.</summary>
    [LibraryImport(Library, EntryPoint = "_exit")]
    public static partial void ExitNow(int status);

    [LibraryImport(Library, EntryPoint = "getpwnam", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial IntPtr GetPasswordEntry(string name);

    [LibraryImport(Library, EntryPoint = "getgrnam", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial IntPtr GetGroupEntry(string name);

    public const int OpenReadWrite = 2;
    public const int SetDescriptorFlags = 2; // F_SETFD
    public const int CloseOnExec = 1; // FD_CLOEXEC
    public const int ErrorNoSuchProcess = 3; // ESRCH

    public static int LastError => Marshal.GetLastPInvokeError();

    public static string LastErrorMessage => Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());

    /// <summary>uid and primary gid of <paramref name="name"/> (a name or a number), or null.</summary>
    public static (uint Uid, uint Gid)? FindUser(string name)
    {
        IntPtr entry = GetPasswordEntry(name);
        if (entry != IntPtr.Zero)
        {
            // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; gid_t pw_gid; ... }
            int offset = 2 * IntPtr.Size;
            return ((uint)Marshal.ReadInt32(entry, offset), (uint)Marshal.ReadInt32(entry, offset + 4));
        }
        return null;
    }

    /// <summary>gid of <paramref name="name"/>, or null.</summary>
    public static uint? FindGroup(string name)
    {
        IntPtr entry = GetGroupEntry(name);
        // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; ... }
        return entry == IntPtr.Zero ? null : (uint)Marshal.ReadInt32(entry, 2 * IntPtr.Size);
    }
}
