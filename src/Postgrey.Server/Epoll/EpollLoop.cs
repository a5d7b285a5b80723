using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Storage;

namespace Postgrey.Server.Epoll;

/// <summary>
/// The Linux transport: one thread runs an edge-triggered epoll loop over the listeners
/// (<see cref="EpollListener"/>) and every connection (<see cref="EpollConnection"/>): reads
/// and parses requests, starts their decisions, and answers them once the store's commit is
/// posted back through an eventfd. Per request that is one wake-up, one read(2) and one send(2),
/// as in a C server; the socket engine of .NET spent more on waking thread-pool threads than on
/// the decision itself (docs/performance.md).
/// </summary>
/// <remarks>
/// The store's thread only posts a finished commit here (<see cref="Post"/>): the answer and the
/// decision's log line are produced on this thread, so that nothing slow (a full log queue, a
/// formatter) ever runs where the database commits.
/// </remarks>
internal sealed unsafe class EpollLoop : IPolicyTransport
{
    private const int MaxEvents = 256;
    private const ulong WakeData = ulong.MaxValue;
    private const ulong ListenerBase = ulong.MaxValue - 1024;

    private readonly ILogger _logger;
    private readonly EpollListener[] _listeners;
    private readonly int _epoll;
    private readonly int _wakeFd;
    private readonly Dictionary<ulong, EpollConnection> _connections = [];
    private readonly ConcurrentQueue<EpollConnection> _decided = new();
    private readonly IDecisionRounds? _rounds;
    private readonly List<EpollConnection> _held = [];
    private readonly TaskCompletionSource _listenersReleased = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Thread? _thread;
    private int _loopThreadId;

    // When the loop last came round (it does at least once a second: epoll_wait's time-out).
    private long _lastTurn = Environment.TickCount64;
    private int _wakeRequested = 1; // 0 only while the loop waits in epoll_wait
    private volatile bool _stopRequested;
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

    public EpollLoop(IReadOnlyList<Socket> listeners, ConnectionGate gate, PolicyConnectionHandler handler, ILogger logger)
    {
        Gate = gate;
        Handler = handler;
        _rounds = handler.Rounds;
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
        _listeners = new EpollListener[listeners.Count];
        for (int i = 0; i < listeners.Count; i++)
        {
            Socket socket = listeners[i];
            var listener = new EpollListener(this, (int)socket.Handle, ListenerBase + (ulong)i, socket.AddressFamily);
            if (!listener.Watch())
            {
                int errno = EpollNative.LastError;
                Dispose();
                throw new IOException($"epoll_ctl on {socket.LocalEndPoint}: {EpollNative.Describe(errno)}");
            }
            _listeners[i] = listener;
        }
    }

    public Task Completion => _finished.Task;

    public long StalledMilliseconds => _finished.Task.IsCompleted ? 0 : Math.Max(0, Environment.TickCount64 - Volatile.Read(ref _lastTurn));

    internal int Epoll => _epoll;

    internal ConnectionGate Gate { get; }

    internal PolicyConnectionHandler Handler { get; }

    internal ILogger Logger => _logger;

    /// <summary>A round is open: decisions started now are committed when the round ends.</summary>
    internal bool InRound { get; private set; }

    /// <summary>Set once the loop has stopped accepting: a stop ends every wait for a request.</summary>
    internal bool Stopped { get; private set; }

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "postgrey-epoll" };
        _thread.Start();
    }

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
                if (_stopRequested && !Stopped)
                {
                    StopAccepting();
                }
                if (Stopped && _connections.Count == 0)
                {
                    break;
                }

                Volatile.Write(ref _lastTurn, Environment.TickCount64);
                // Only a loop about to sleep needs waking: until here, commits posted by the
                // store wait in the queue without an eventfd write each (the flag stays set).
                Interlocked.Exchange(ref _wakeRequested, 0);
                bool pending = !_decided.IsEmpty || (_stopRequested && !Stopped);
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
                BeginRound();
                for (int i = 0; i < n; i++)
                {
                    ulong data = EpollNative.DataAt(events, i);
                    if (data == WakeData)
                    {
                        OnWake();
                    }
                    else if (data >= ListenerBase)
                    {
                        _listeners[(int)(data - ListenerBase)].AcceptAll();
                    }
                    else if (_connections.TryGetValue(data, out EpollConnection? connection))
                    {
                        connection.OnEvents(EpollNative.EventsAt(events, i));
                    }
                }

                AnswerDecided();
                EndRound();
                AnswerDecided();

                long now = Environment.TickCount64;
                foreach (EpollListener listener in _listeners)
                {
                    listener.ResumeIfDue(now);
                }
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
            ServerLog.LoopFailed(_logger, ex);
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
        foreach (EpollListener listener in _listeners)
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
        Stopped = true;
        foreach (EpollListener listener in _listeners)
        {
            listener.Release();
        }
        foreach (EpollConnection connection in _connections.Values.ToArray())
        {
            connection.CloseIfWaiting();
        }
        _listenersReleased.TrySetResult();
    }

    /// <summary>Serves an accepted, admitted socket; false (and the socket closed) if epoll
    /// would not take it.</summary>
    internal void Add(int fd, Admission admission, string peer)
    {
        var connection = new EpollConnection(this, (ulong)admission.Id, fd, Handler.Open(peer));
        if (EpollNative.Add(_epoll, fd, EpollNative.EPOLLIN | EpollNative.EPOLLOUT | EpollNative.EPOLLRDHUP | EpollNative.EPOLLET, connection.Id) != 0)
        {
            ServerLog.ConnectionDropped(_logger, peer, EpollNative.Describe(EpollNative.LastError));
            EpollNative.Close(fd);
            Gate.Release();
            return;
        }
        _connections.Add(connection.Id, connection);
    }

    /// <summary>Called by a connection as it closes its socket.</summary>
    internal void Remove(EpollConnection connection)
    {
        if (_connections.Remove(connection.Id))
        {
            Gate.Release();
        }
    }

    /// <summary>
    /// Run-to-completion: every decision this round of events starts is held by the store and
    /// committed at <see cref="EndRound"/>, on this thread when the store is free (the epoll
    /// round is the group commit), so that no hand-off to the writer and back is paid per request.
    /// </summary>
    private void BeginRound()
    {
        if (_rounds is not null)
        {
            _rounds.BeginRound();
            InRound = true;
        }
    }

    /// <summary>Called by a connection whose decision the round holds.</summary>
    internal void Hold(EpollConnection connection) => _held.Add(connection);

    private void EndRound()
    {
        if (_rounds is null)
        {
            return;
        }
        InRound = false;
        try
        {
            _rounds.EndRound();
        }
        finally
        {
            // Committed here: answered by the AnswerDecided after this. Handed to the writer: each
            // waits for its commit as outside a round.
            foreach (EpollConnection connection in _held)
            {
                connection.AwaitCommit();
            }
            _held.Clear();
        }
    }

    /// <summary>Called where a commit finished: on the store's thread, or on the loop; late and
    /// to no effect, on a pool thread. Hands the connection over, nothing more.</summary>
    internal void Post(EpollConnection c)
    {
        _decided.Enqueue(c);
        if (Environment.CurrentManagedThreadId != _loopThreadId)
        {
            Wake();
        }
    }

    /// <summary>Answers the decisions whose commit finished; answering may read and start the
    /// next request of a connection.</summary>
    private void AnswerDecided()
    {
        while (_decided.TryDequeue(out EpollConnection? c))
        {
            c.OnCommitted();
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

    private void CloseIdle(long now)
    {
        List<EpollConnection>? idle = null;
        foreach (EpollConnection c in _connections.Values)
        {
            if (c.IsIdle(now))
            {
                (idle ??= []).Add(c);
            }
        }
        foreach (EpollConnection c in idle ?? [])
        {
            c.Session.OnIdle();
            c.Close();
        }
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
        foreach (EpollConnection c in _connections.Values.ToArray())
        {
            c.Close();
        }
        if (_wakeFd >= 0)
        {
            EpollNative.Close(_wakeFd);
        }
        if (_epoll >= 0)
        {
            EpollNative.Close(_epoll);
        }
    }
}
