using System.Runtime.InteropServices;

namespace Postgrey.Server.Epoll;

/// <summary>The Linux calls of the epoll transport. Every caller runs on Linux only
/// (<see cref="EpollLoop.IsChosen"/>).</summary>
internal static unsafe partial class EpollNative
{
    private const string Library = "libc";

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLET = 1u << 31;

    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;

    public const int O_NONBLOCK = 0x800;
    public const int F_GETFL = 3;
    public const int F_SETFL = 4;
    public const int SOCK_NONBLOCK = 0x800;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;

    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ECONNABORTED = 103;

    public const int IPPROTO_TCP = 6;
    public const int TCP_NODELAY = 1;

    /// <summary>struct epoll_event is packed (12 bytes) on x86 and x86-64, 16 bytes elsewhere.</summary>
    public static readonly int EventSize =
        RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86 ? 12 : 16;

    private static readonly int DataOffset = EventSize == 12 ? 4 : 8;

    [LibraryImport(Library, EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int EpollCreate(int flags);

    [LibraryImport(Library, EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtl(int epfd, int op, int fd, byte* ev);

    [LibraryImport(Library, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int EpollWait(int epfd, byte* events, int maxEvents, int timeout);

    [LibraryImport(Library, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initial, int flags);

    [LibraryImport(Library, EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept(int fd, byte* address, int* addressLength, int flags);

    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buffer, nint count);

    [LibraryImport(Library, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buffer, nint count);

    [LibraryImport(Library, EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buffer, nint count, int flags);

    [LibraryImport(Library, EntryPoint = "close")]
    private static partial int CloseDescriptor(int fd);

    /// <summary>close(2); its result tells nothing useful for a socket, which is gone either way.</summary>
    public static void Close(int fd) => _ = CloseDescriptor(fd);

    [LibraryImport(Library, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int command, int argument);

    [LibraryImport(Library, EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, int* value, int length);

    public static int LastError => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    public static int Add(int epfd, int fd, uint events, ulong data)
    {
        byte* ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + DataOffset) = data;
        return EpollCtl(epfd, EPOLL_CTL_ADD, fd, ev);
    }

    public static int Remove(int epfd, int fd)
    {
        byte* ev = stackalloc byte[16];
        return EpollCtl(epfd, EPOLL_CTL_DEL, fd, ev);
    }

    public static uint EventsAt(byte* events, int i) => *(uint*)(events + (i * EventSize));

    public static ulong DataAt(byte* events, int i) => *(ulong*)(events + (i * EventSize) + DataOffset);

    public static bool SetNonBlocking(int fd)
    {
        int flags = Fcntl(fd, F_GETFL, 0);
        return flags >= 0 && Fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
    }
}
