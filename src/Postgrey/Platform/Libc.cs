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

    [LibraryImport(Library, EntryPoint = "fchown", SetLastError = true)]
    public static partial int ChangeOwner(int fd, uint uid, uint gid);

    [LibraryImport(Library, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int ChangeMode(int fd, uint mode);

    [LibraryImport(Library, EntryPoint = "openat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int OpenAt(int directoryFd, string path, int flags, uint mode);

    [LibraryImport(Library, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Statx(int directoryFd, string path, int flags, uint mask, [Out] byte[] buffer);

    [LibraryImport(Library, EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial IntPtr RealPath(string path, IntPtr resolved);

    [LibraryImport(Library, EntryPoint = "free")]
    private static partial void Free(IntPtr pointer);

    [LibraryImport(Library, EntryPoint = "signal")]
    private static partial IntPtr Signal(int signal, IntPtr handler);

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

    public const int OpenReadOnly = 0;
    public const int OpenWriteOnly = 1;
    public const int OpenReadWrite = 2;
    public const int OpenCreate = 0x40; // O_CREAT
    public const int OpenExclusive = 0x80; // O_EXCL
    public const int OpenNonBlocking = 0x800; // O_NONBLOCK: a planted FIFO must not hang the start
    public const int OpenCloseOnExec = 0x80000; // O_CLOEXEC

    /// <summary>O_DIRECTORY: differs between x86-64 (and the generic ABI) and arm64.</summary>
    public static int OpenDirectory => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x4000 : 0x10000;

    /// <summary>O_NOFOLLOW: a symbolic link as last component fails with ELOOP instead of being followed.</summary>
    public static int OpenNoFollow => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x8000 : 0x20000;

    public const int CurrentDirectory = -100; // AT_FDCWD
    public const int ErrorLoop = 40; // ELOOP
    public const int ErrorExists = 17; // EEXIST
    public const int SignalHangUp = 1; // SIGHUP
    public const int SetDescriptorFlags = 2; // F_SETFD
    public const int CloseOnExec = 1; // FD_CLOEXEC
    public const int ErrorNoSuchProcess = 3; // ESRCH

    public static int LastError => Marshal.GetLastPInvokeError();

    public static string LastErrorMessage => Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());

    /// <summary>Makes SIGHUP ignored at the kernel level. An ignored signal stays ignored across
    /// exec (a handler does not), so a child started now cannot die of one before its own
    /// handlers are in place.</summary>
    public static void IgnoreHangUp() => _ = Signal(SignalHangUp, 1);

    /// <summary>SIGHUP back to its default action (SIG_DFL), from an inherited SIG_IGN.</summary>
    public static void DefaultHangUp() => _ = Signal(SignalHangUp, 0);

    /// <summary>The canonical path (every link resolved), or null with errno set.</summary>
    public static string? Resolve(string path)
    {
        IntPtr resolved = RealPath(path, IntPtr.Zero);
        if (resolved == IntPtr.Zero)
        {
            return null;
        }
        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            Free(resolved);
        }
    }

    /// <summary>statx(2) of <paramref name="path"/> relative to <paramref name="directoryFd"/>, the
    /// last component not followed; "" with <paramref name="directoryFd"/> describes that
    /// descriptor itself. statx, unlike stat, has one layout on every architecture. Null with
    /// errno set when it fails.</summary>
    public static FileFacts? Describe(int directoryFd, string path)
    {
        const int SymlinkNoFollow = 0x100; // AT_SYMLINK_NOFOLLOW
        const int EmptyPath = 0x1000; // AT_EMPTY_PATH
        const uint BasicStats = 0x7ff; // STATX_BASIC_STATS
        byte[] buffer = new byte[256];
        if (Statx(directoryFd, path, path.Length == 0 ? EmptyPath : SymlinkNoFollow, BasicStats, buffer) != 0)
        {
            return null;
        }
        // struct statx { u32 mask; u32 blksize; u64 attributes; u32 nlink; u32 uid; u32 gid; u16 mode; ... }
        return new FileFacts(
            Links: BitConverter.ToUInt32(buffer, 16),
            Uid: BitConverter.ToUInt32(buffer, 20),
            Gid: BitConverter.ToUInt32(buffer, 24),
            Mode: BitConverter.ToUInt16(buffer, 28));
    }

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

/// <summary>What statx(2) says of a file: link count, owner and st_mode (type and permissions).</summary>
internal readonly record struct FileFacts(uint Links, uint Uid, uint Gid, uint Mode)
{
    private const uint TypeMask = 0xF000; // S_IFMT

    public bool IsRegularFile => (Mode & TypeMask) == 0x8000;

    public bool IsDirectory => (Mode & TypeMask) == 0x4000;

    public bool IsSymbolicLink => (Mode & TypeMask) == 0xA000;

    public uint Permissions => Mode & 0xFFF; // with setuid, setgid and sticky

    public string Kind => (Mode & TypeMask) switch
    {
        0x8000 => "a regular file",
        0x4000 => "a directory",
        0xA000 => "a symbolic link",
        0xC000 => "a socket",
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x6000 => "a block device",
        _ => "a special file",
    };
}
