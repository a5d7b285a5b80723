using System.Net;
using System.Net.Sockets;

namespace Postgrey.Server.Epoll;

/// <summary>One listening socket in the epoll set: accepts what its backlog holds through the
/// <see cref="ConnectionGate"/>, and leaves the set for a while when accept(2) fails.</summary>
internal sealed unsafe class EpollListener(EpollLoop loop, int fd, ulong data, AddressFamily family)
{
    private const int AcceptsPerWake = 64;
    private const int AddressRoom = 128;

    private int _backoffMs;

    /// <summary>While not 0: out of the epoll set until this tick (accept failed).</summary>
    public long PausedUntil { get; private set; }

    /// <summary>Puts the listener in the epoll set, level-triggered: a connection left in the
    /// backlog is offered again at the next wait.</summary>
    public bool Watch() => EpollNative.SetNonBlocking(fd) && EpollNative.Add(loop.Epoll, fd, EpollNative.EPOLLIN, data) == 0;

    public void AcceptAll()
    {
        if (loop.Stopped)
        {
            return;
        }
        byte* address = stackalloc byte[AddressRoom];
        for (int i = 0; i < AcceptsPerWake; i++)
        {
            int length = AddressRoom;
            int client = EpollNative.Accept(fd, address, &length, EpollNative.SOCK_NONBLOCK | EpollNative.SOCK_CLOEXEC);
            if (client < 0)
            {
                int errno = EpollNative.LastError;
                if (errno is EpollNative.EAGAIN or EpollNative.EINTR)
                {
                    return;
                }
                if (errno == EpollNative.ECONNABORTED)
                {
                    continue; // the client gave up while in the backlog
                }
                // Out of descriptors or buffers: stop watching this listener for a while
                // instead of spinning on it.
                int delay = loop.Gate.AcceptFailed(ref _backoffMs, EpollNative.Describe(errno));
                EpollNative.Remove(loop.Epoll, fd);
                PausedUntil = Environment.TickCount64 + delay;
                return;
            }
            _backoffMs = 0;
            if (!loop.Gate.TryAdmit(family, out Admission admission))
            {
                EpollNative.Close(client);
                continue;
            }
            if (admission.NoDelay)
            {
                int one = 1;
                EpollNative.SetSockOpt(client, EpollNative.IPPROTO_TCP, EpollNative.TCP_NODELAY, &one, sizeof(int));
            }
            loop.Add(client, admission, admission.Peer(Decode(address, length)));
        }
    }

    public void ResumeIfDue(long now)
    {
        if (PausedUntil != 0 && now >= PausedUntil && !loop.Stopped)
        {
            PausedUntil = 0;
            EpollNative.Add(loop.Epoll, fd, EpollNative.EPOLLIN, data);
        }
    }

    /// <summary>Leaves the epoll set for good (the socket may be closed afterwards).</summary>
    public void Release()
    {
        if (PausedUntil == 0)
        {
            EpollNative.Remove(loop.Epoll, fd);
        }
        PausedUntil = 0;
    }

    /// <summary>The client's address from accept4's sockaddr; null for a Unix socket.</summary>
    private static IPEndPoint? Decode(byte* address, int length) => *(ushort*)address switch
    {
        2 when length >= 8 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 4, 4)), (address[2] << 8) | address[3]),
        10 when length >= 24 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 8, 16)), (address[2] << 8) | address[3]),
        _ => null,
    };
}
