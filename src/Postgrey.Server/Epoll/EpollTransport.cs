using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Protocol;

namespace Postgrey.Server.Epoll;

/// <summary>
/// The Linux transport: one thread runs an edge-triggered epoll loop over the listeners and
/// every connection, reads and parses requests, starts their decisions, and writes the answers
/// that the database writer hands back through an eventfd. Per request that is one wake-up, one
/// read(2) and one send(2), as in a C server; the socket engine of .NET spent more on waking
/// thread-pool threads than on the decision itself (docs/performance.md).
/// </summary>
/// <remarks>
/// Same behaviour as <see cref="PolicyConnectionHandler.RunAsync"/>: one request at a time per
/// connection, answers in order, the same limits, idle timeout and log lines; a request read
/// before a stop is still answered.
/// </remarks>
internal sealed unsafe partial class EpollTransport : IDisposable
{
    private const int MaxEvents = 256;
    private const int AcceptsPerWake = 64;
    private const ulong WakeData = ulong.MaxValue;
    private const ulong ListenerBase = ulong.MaxValue - 1024;

    private readonly PolicyConnectionHandler _handler;
    private readonly ServerOptions _options;
    private readonly ILogger _logger;
    private readonly Listener[] _listeners;
    private readonly Action _warnRefused;
    private readonly int _epoll;
    private readonly int _wakeFd;
    private readonly Dictionary<ulong, Connection> _connections = [];
    private readonly ConcurrentQueue<Connection> _decided = new();
    private readonly TaskCompletionSource _listenersReleased = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Thread? _thread;
    private int _loopThreadId;
    private ulong _lastId;
    private int _wakeRequested = 1; // 0 only while the loop waits in epoll_wait
    private int _connectionCount;
    private volatile bool _stopRequested;
    private bool _stopped;
    private bool _disposed;

    /// <summary>Whether <paramref name="transport"/> means this one here.</summary>
    public static bool IsChosen(PolicyTransport transport) => transport switch
    {
        PolicyTransport.Epoll => OperatingSystem.IsLinux()
            ? true
            : throw new PlatformNotSupportedException("the epoll transport needs Linux"),
        PolicyTransport.Sockets => false,
        _ => throw new ArgumentOutOfRangeException(nameof(transport), transport, "no such transport"),
    };

    public EpollTransport(IReadOnlyList<Socket> listeners, ServerOptions options, PolicyConnectionHandler handler, Action warnRefused, ILogger logger)
    {
        _options = options;
        _handler = handler;
        _warnRefused = warnRefused;
        _logger = logger;
        _epoll = EpollNative.EpollCreate(EpollNative.EPOLL_CLOEXEC);
        if (_epoll < 0)
        {
            throw new IOException($"epoll_create1: {EpollNative.Describe(EpollNative.LastError)}");
        }
        _wakeFd = EpollNative.EventFd(0, EpollNative.EFD_NONBLOCK | EpollNative.EFD_CLOEXEC);
        if (_wakeFd < 0 || EpollNative.Add(_epoll, _wakeFd, EpollNative.EPOLLIN, WakeData) != 0)
        {
            int errno = EpollNative.LastError;
            Dispose();
            throw new IOException($"eventfd: {EpollNative.Describe(errno)}");
        }
        _listeners = new Listener[listeners.Count];
        for (int i = 0; i < listeners.Count; i++)
        {
            Socket socket = listeners[i];
            int fd = (int)socket.Handle;
            // Level-triggered: a connection left in the backlog is offered again at the next wait.
            var listener = new Listener(fd, ListenerBase + (ulong)i, socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6);
            if (!EpollNative.SetNonBlocking(fd) || EpollNative.Add(_epoll, fd, EpollNative.EPOLLIN, listener.Data) != 0)
            {
                int errno = EpollNative.LastError;
                Dispose();
                throw new IOException($"epoll_ctl on {socket.LocalEndPoint}: {EpollNative.Describe(errno)}");
            }
            _listeners[i] = listener;
        }
    }

    /// <summary>Completes when the loop has ended: stopped and every connection closed.</summary>
    public Task Completion => _finished.Task;

    public int ConnectionCount => Volatile.Read(ref _connectionCount);

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "postgrey-epoll" };
        _thread.Start();
    }

    /// <summary>Stops accepting (the listeners may be closed once this completes) and closes
    /// every connection that is not answering a request; the others close after their answer.</summary>
    public Task StopAcceptingAsync()
    {
        _stopRequested = true;
        Wake();
        return _listenersReleased.Task;
    }

    private void Run()
    {
        byte* events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * EpollNative.EventSize));
        _loopThreadId = Environment.CurrentManagedThreadId;
        try
        {
            long nextIdleCheck = Environment.TickCount64 + 1000;
            while (true)
            {
                if (_stopRequested && !_stopped)
                {
                    StopAccepting();
                }
                if (_stopped && _connections.Count == 0)
                {
                    break;
                }

                // Only a loop about to sleep needs waking: until here, decisions posted by the
                // writer wait in the queue without an eventfd write each (the flag stays set).
                Interlocked.Exchange(ref _wakeRequested, 0);
                bool pending = !_decided.IsEmpty || (_stopRequested && !_stopped);
                int n = EpollNative.EpollWait(_epoll, events, MaxEvents, pending ? 0 : NextTimeout());
                Volatile.Write(ref _wakeRequested, 1);
                if (n < 0)
                {
                    int errno = EpollNative.LastError;
                    if (errno == EpollNative.EINTR)
                    {
                        continue;
                    }
                    throw new IOException($"epoll_wait: {EpollNative.Describe(errno)}");
                }
                for (int i = 0; i < n; i++)
                {
                    ulong data = EpollNative.DataAt(events, i);
                    if (data == WakeData)
                    {
                        OnWake();
                    }
                    else if (data >= ListenerBase)
                    {
                        Accept(_listeners[(int)(data - ListenerBase)]);
                    }
                    else if (_connections.TryGetValue(data, out Connection? connection))
                    {
                        OnEvents(connection, EpollNative.EventsAt(events, i));
                    }
                }

                AnswerDecided();

                long now = Environment.TickCount64;
                ResumePausedListeners(now);
                if (now >= nextIdleCheck)
                {
                    CloseIdle(now);
                    nextIdleCheck = now + 1000;
                }
            }
            _listenersReleased.TrySetResult();
            _finished.TrySetResult();
        }
        catch (Exception ex)
        {
            Log.LoopFailed(_logger, ex);
            _listenersReleased.TrySetResult();
            _finished.TrySetException(ex);
        }
        finally
        {
            NativeMemory.Free(events);
        }
    }

    private int NextTimeout()
    {
        int timeout = 1000;
        long now = Environment.TickCount64;
        foreach (Listener listener in _listeners)
        {
            if (listener.PausedUntil != 0)
            {
                timeout = (int)Math.Clamp(listener.PausedUntil - now, 0, timeout);
            }
        }
        return timeout;
    }

    private void StopAccepting()
    {
        _stopped = true;
        foreach (Listener listener in _listeners)
        {
            if (listener.PausedUntil == 0)
            {
                EpollNative.Remove(_epoll, listener.Fd);
            }
            listener.PausedUntil = 0;
        }
        foreach (Connection connection in _connections.Values.ToArray())
        {
            if (!connection.Busy && !connection.Sending)
            {
                Close(connection);
            }
        }
        _listenersReleased.TrySetResult();
    }

    private void Accept(Listener listener)
    {
        if (_stopped)
        {
            return;
        }
        byte* address = stackalloc byte[128];
        for (int i = 0; i < AcceptsPerWake; i++)
        {
            int length = 128;
            int fd = EpollNative.Accept(listener.Fd, address, &length, EpollNative.SOCK_NONBLOCK | EpollNative.SOCK_CLOEXEC);
            if (fd < 0)
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
                listener.Backoff = Math.Min(Math.Max(listener.Backoff * 2, 10), 1000);
                PolicyServer.Log.AcceptFailed(_logger, EpollNative.Describe(errno), listener.Backoff);
                EpollNative.Remove(_epoll, listener.Fd);
                listener.PausedUntil = Environment.TickCount64 + listener.Backoff;
                return;
            }
            listener.Backoff = 0;
            if (_connections.Count >= _options.MaxConnections)
            {
                _warnRefused();
                EpollNative.Close(fd);
                continue;
            }
            if (listener.IsTcp)
            {
                int one = 1;
                EpollNative.SetSockOpt(fd, EpollNative.IPPROTO_TCP, EpollNative.TCP_NODELAY, &one, sizeof(int));
            }
            ulong id = ++_lastId;
            var connection = new Connection(this, id, fd, FormatPeer(id, address, length));
            if (EpollNative.Add(_epoll, fd, EpollNative.EPOLLIN | EpollNative.EPOLLOUT | EpollNative.EPOLLRDHUP | EpollNative.EPOLLET, id) != 0)
            {
                Log.ConnectionDropped(_logger, connection.Peer, EpollNative.Describe(EpollNative.LastError));
                EpollNative.Close(fd);
                continue;
            }
            _connections.Add(id, connection);
            Volatile.Write(ref _connectionCount, _connections.Count);
            ServerMetrics.Opened();
        }
    }

    private void ResumePausedListeners(long now)
    {
        foreach (Listener listener in _listeners)
        {
            if (listener.PausedUntil != 0 && now >= listener.PausedUntil && !_stopped)
            {
                listener.PausedUntil = 0;
                EpollNative.Add(_epoll, listener.Fd, EpollNative.EPOLLIN, listener.Data);
            }
        }
    }

    private static string FormatPeer(ulong id, byte* address, int length)
    {
        ushort family = *(ushort*)address;
        IPEndPoint? endpoint = family switch
        {
            2 when length >= 8 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 4, 4)), (address[2] << 8) | address[3]),
            10 when length >= 24 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 8, 16)), (address[2] << 8) | address[3]),
            _ => null,
        };
        return endpoint is null ? $"#{id} unix" : $"#{id} {endpoint}";
    }

    private void OnEvents(Connection connection, uint events)
    {
        if ((events & EpollNative.EPOLLOUT) != 0 && connection.Sending)
        {
            Flush(connection);
        }
        if ((events & (EpollNative.EPOLLIN | EpollNative.EPOLLRDHUP | EpollNative.EPOLLHUP | EpollNative.EPOLLERR)) != 0)
        {
            connection.Readable = true;
        }
        if ((events & (EpollNative.EPOLLRDHUP | EpollNative.EPOLLHUP | EpollNative.EPOLLERR)) != 0)
        {
            // The FIN may have come with the last request, in the same edge: no edge follows,
            // so the socket is read to its end (read(2) = 0) once the answers are out.
            connection.PeerClosed = true;
        }
        Pump(connection);
    }

    /// <summary>Parses what has arrived and reads more, until a decision is pending, the answer
    /// waits for room in the socket, or the socket has nothing more.</summary>
    private void Pump(Connection c)
    {
        while (!c.Closed && !c.Busy && !c.Sending)
        {
            if (c.Start < c.End)
            {
                PolicyReadStatus status = c.Parser.TryRead(c.Buffer.AsSpan(c.Start, c.End - c.Start), c.Request, out int consumed);
                c.Start += consumed;
                if (status == PolicyReadStatus.Request)
                {
                    Decide(c);
                    continue;
                }
                if (status != PolicyReadStatus.NeedMoreData)
                {
                    if (_handler.OnBadInput(status, c.Parser, c.Peer))
                    {
                        Close(c);
                    }
                    continue;
                }
            }
            if (_stopped)
            {
                Close(c); // a stop ends the wait for the next request
                return;
            }
            if (!c.Readable)
            {
                return;
            }
            ReadMore(c);
        }
    }

    private void ReadMore(Connection c)
    {
        if (c.Start == c.End)
        {
            c.Start = c.End = 0;
        }
        else if (c.End == c.Buffer.Length)
        {
            c.MakeRoom();
        }
        int room = c.Buffer.Length - c.End;
        if (room == 0)
        {
            // Cannot happen within the parser's limits; never read(2) into no room (0 = EOF).
            _handler.OnBadInput(PolicyReadStatus.RequestTooLarge, c.Parser, c.Peer);
            Close(c);
            return;
        }
        nint n;
        fixed (byte* p = &c.Buffer[c.End])
        {
            n = EpollNative.Read(c.Fd, p, room);
        }
        if (n > 0)
        {
            c.End += (int)n;
            // A short read of a stream socket drained it: the next data comes with a new edge.
            // Not so the end of a half-closed one, which is no data and brings no edge.
            if (n < room && !c.PeerClosed)
            {
                c.Readable = false;
            }
            return;
        }
        if (n == 0)
        {
            if (c.Start < c.End)
            {
                PolicyConnectionHandler.Log.IncompleteRequest(_logger, c.Peer, c.End - c.Start);
            }
            Close(c);
            return;
        }
        int errno = EpollNative.LastError;
        if (errno == EpollNative.EAGAIN)
        {
            c.Readable = false;
        }
        else if (errno != EpollNative.EINTR)
        {
            PolicyConnectionHandler.Log.ConnectionError(_logger, c.Peer, EpollNative.Describe(errno));
            Close(c);
        }
    }

    private void Decide(Connection c)
    {
        ValueTask<string> decision;
        try
        {
            decision = _handler.Engine.DecideAsync(c.Request, CancellationToken.None);
        }
        catch (Exception ex)
        {
            PolicyConnectionHandler.Log.ConnectionFailed(_logger, c.Peer, ex);
            Close(c);
            return;
        }
        c.Pending = decision.ConfigureAwait(false).GetAwaiter();
        if (decision.IsCompleted)
        {
            Answer(c);
            return;
        }
        c.Busy = true;
        c.Pending.UnsafeOnCompleted(c.OnDecided);
        if (c.Pending.IsCompleted)
        {
            // It finished between the two looks: then the runtime queues OnDecided to the
            // thread pool instead of running it on the writer, and an answer would wait for a
            // pool thread. Answered here instead; the late OnDecided finds nothing to answer.
            Post(c);
        }
    }

    /// <summary>Called where a decision finished: on the database writer's thread, or on the
    /// loop (<see cref="Decide"/>); late and to no effect, on a pool thread.</summary>
    private void Post(Connection c)
    {
        _decided.Enqueue(c);
        if (Environment.CurrentManagedThreadId != _loopThreadId)
        {
            Wake();
        }
    }

    /// <summary>Answers the decisions that finished; answering may read and start the next
    /// request of a connection.</summary>
    private void AnswerDecided()
    {
        while (_decided.TryDequeue(out Connection? c))
        {
            // A connection may be posted twice for one decision (Decide), and a late post may
            // come while its next decision runs: only a finished decision is answered.
            if (c.Closed || !c.Busy || !c.Pending.IsCompleted)
            {
                continue;
            }
            c.Busy = false;
            Answer(c);
            Pump(c);
        }
    }

    private void Wake()
    {
        if (Interlocked.Exchange(ref _wakeRequested, 1) == 0)
        {
            ulong one = 1;
            EpollNative.Write(_wakeFd, (byte*)&one, sizeof(ulong));
        }
    }

    private void OnWake()
    {
        ulong count;
        EpollNative.Read(_wakeFd, (byte*)&count, sizeof(ulong));
    }

    private void Answer(Connection c)
    {
        string action;
        try
        {
#pragma warning disable VSTHRD002 // completed: called at once or from its completion
            action = c.Pending.GetResult();
#pragma warning restore VSTHRD002
        }
        catch (Exception ex)
        {
            PolicyConnectionHandler.Log.ConnectionFailed(_logger, c.Peer, ex);
            Close(c);
            return;
        }
        finally
        {
            c.Pending = default;
        }
        c.Request.Reset();
        c.Output.ResetWrittenCount();
        PolicyResponseWriter.Write(c.Output, action);
        ServerMetrics.Answered(c.Request);
        c.Sent = 0;
        c.Sending = true;
        c.WaitingSince = Environment.TickCount64;
        c.CloseAfterAnswer = _handler.Exim;
        Flush(c);
    }

    private void Flush(Connection c)
    {
        ReadOnlySpan<byte> reply = c.Output.WrittenSpan;
        while (c.Sent < reply.Length)
        {
            nint n;
            fixed (byte* p = reply[c.Sent..])
            {
                n = EpollNative.Send(c.Fd, p, reply.Length - c.Sent, EpollNative.MSG_NOSIGNAL | EpollNative.MSG_DONTWAIT);
            }
            if (n >= 0)
            {
                c.Sent += (int)n;
                continue;
            }
            int errno = EpollNative.LastError;
            if (errno == EpollNative.EAGAIN)
            {
                return; // the rest goes at the next EPOLLOUT edge
            }
            if (errno != EpollNative.EINTR)
            {
                PolicyConnectionHandler.Log.ConnectionError(_logger, c.Peer, EpollNative.Describe(errno));
                Close(c);
                return;
            }
        }
        c.Sending = false;
        if (c.CloseAfterAnswer)
        {
            Close(c);
        }
    }

    private void CloseIdle(long now)
    {
        long idleMs = (long)_handler.Limits.IdleTimeout.TotalMilliseconds;
        List<Connection>? idle = null;
        foreach (Connection c in _connections.Values)
        {
            if (!c.Busy && now - c.WaitingSince > idleMs)
            {
                (idle ??= []).Add(c);
            }
        }
        if (idle is null)
        {
            return;
        }
        foreach (Connection c in idle)
        {
            PolicyConnectionHandler.Log.IdleTimeout(_logger, c.Peer, (int)_handler.Limits.IdleTimeout.TotalSeconds);
            Close(c);
        }
    }

    private void Close(Connection c)
    {
        if (c.Closed)
        {
            return;
        }
        c.Closed = true;
        EpollNative.Close(c.Fd); // also leaves the epoll set
        _connections.Remove(c.Id);
        Volatile.Write(ref _connectionCount, _connections.Count);
        ServerMetrics.Closed();
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_thread is { IsAlive: true })
        {
            return; // the loop outlived the shutdown timeout; the process is ending anyway
        }
        foreach (Connection c in _connections.Values)
        {
            EpollNative.Close(c.Fd);
        }
        _connections.Clear();
        if (_wakeFd >= 0)
        {
            EpollNative.Close(_wakeFd);
        }
        if (_epoll >= 0)
        {
            EpollNative.Close(_epoll);
        }
    }

    private sealed class Listener(int fd, ulong data, bool isTcp)
    {
        public int Fd { get; } = fd;

        /// <summary>Its epoll data: <see cref="ListenerBase"/> + its index.</summary>
        public ulong Data { get; } = data;

        public bool IsTcp { get; } = isTcp;

        public int Backoff { get; set; }

        /// <summary>While not 0: out of the epoll set until this tick (accept failed).</summary>
        public long PausedUntil { get; set; }
    }

    /// <summary>One client connection; touched by the loop thread only, except
    /// <see cref="OnDecided"/>.</summary>
    private sealed class Connection
    {
        private readonly EpollTransport _owner;

        public Connection(EpollTransport owner, ulong id, int fd, string peer)
        {
            _owner = owner;
            Id = id;
            Fd = fd;
            Peer = peer;
            Parser = new PolicyRequestParser(owner._handler.Limits);
            WaitingSince = Environment.TickCount64;
            OnDecided = () => _owner.Post(this);
        }

        public ulong Id { get; }

        public int Fd { get; }

        public string Peer { get; }

        public PolicyRequestParser Parser { get; }

        public PolicyRequest Request { get; } = new();

        public ArrayBufferWriter<byte> Output { get; } = new(256);

        public Action OnDecided { get; }

        public byte[] Buffer { get; private set; } = new byte[4096];

        public int Start { get; set; }

        public int End { get; set; }

        /// <summary>The socket may hold unread bytes (no short read or EAGAIN since the last edge).</summary>
        public bool Readable { get; set; }

        /// <summary>A decision is running; nothing is read until it is answered.</summary>
        public bool Busy { get; set; }

        /// <summary>An answer is partly sent; the rest waits for EPOLLOUT.</summary>
        public bool Sending { get; set; }

        public int Sent { get; set; }

        public bool CloseAfterAnswer { get; set; }

        public bool Closed { get; set; }

        /// <summary>When the connection began waiting for its next request (accepted, or its
        /// last answer written): bytes that make no request do not keep it open.</summary>
        public long WaitingSince { get; set; }

        /// <summary>The client has shut down its side (EPOLLRDHUP/HUP/ERR seen).</summary>
        public bool PeerClosed { get; set; }

        public ConfiguredValueTaskAwaitable<string>.ConfiguredValueTaskAwaiter Pending { get; set; }

        /// <summary>Compacts the buffer, or doubles it while a request may still fit the limits
        /// (the parser refuses anything longer before the buffer outgrows them).</summary>
        public void MakeRoom()
        {
            if (Start > 0)
            {
                Array.Copy(Buffer, Start, Buffer, 0, End - Start);
                End -= Start;
                Start = 0;
                return;
            }
            PolicyLimits limits = _owner._handler.Limits;
            int max = Math.Max(limits.MaxRequestBytes, limits.MaxLineBytes) + 4096;
            if (Buffer.Length < max)
            {
                byte[] bigger = new byte[Math.Min(Buffer.Length * 2, max)];
                Array.Copy(Buffer, bigger, End);
                Buffer = bigger;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1008, LogLevel.Warning, "{Peer}: connection dropped: {Error}", EventName = "ConnectionDropped")]
        public static partial void ConnectionDropped(ILogger logger, string peer, string error);

        [LoggerMessage(1009, LogLevel.Critical, "the connection loop failed; stopping", EventName = "LoopFailed")]
        public static partial void LoopFailed(ILogger logger, Exception exception);
    }
}
