using System.Buffers;
using Postgrey.Core.Greylisting;

namespace Postgrey.Server.Epoll;

/// <summary>
/// One client connection of the <see cref="EpollLoop"/>: its socket, its input buffer and the
/// answer being sent, around its <see cref="PolicySession"/>. One request at a time, answers in
/// order; a request read before a stop is still answered. Touched by the loop thread only,
/// except the commit's continuation, which only posts it back to the loop.
/// </summary>
internal sealed unsafe class EpollConnection
{
    private readonly EpollLoop _loop;
    private readonly int _fd;
    private readonly Action _onCommitted;
    private readonly ArrayBufferWriter<byte> _output = new(256);
    private byte[] _buffer = new byte[4096];
    private int _start;
    private int _end;
    private PendingDecision _pending;

    // The socket may hold unread bytes (no short read or EAGAIN since the last edge).
    private bool _readable;

    // A decision is waiting for its commit; nothing is read until it is answered.
    private bool _busy;

    // An answer is partly sent; the rest waits for EPOLLOUT.
    private bool _sending;
    private int _sent;
    private bool _closeAfterAnswer;
    private bool _closed;

    // The client has shut down its side (EPOLLRDHUP/HUP/ERR seen).
    private bool _peerClosed;

    public EpollConnection(EpollLoop loop, ulong id, int fd, PolicySession session)
    {
        _loop = loop;
        _fd = fd;
        Id = id;
        Session = session;
        _onCommitted = () => _loop.Post(this);
    }

    /// <summary>Its epoll data.</summary>
    public ulong Id { get; }

    public PolicySession Session { get; }

    /// <summary>Waiting for a request past the idle time (a decision in progress is not idle).</summary>
    public bool IsIdle(long now) => !_busy && Session.IsIdle(now);

    public void OnEvents(uint events)
    {
        if ((events & EpollNative.EPOLLOUT) != 0 && _sending)
        {
            Flush();
        }
        if ((events & (EpollNative.EPOLLIN | EpollNative.EPOLLRDHUP | EpollNative.EPOLLHUP | EpollNative.EPOLLERR)) != 0)
        {
            _readable = true;
        }
        if ((events & (EpollNative.EPOLLRDHUP | EpollNative.EPOLLHUP | EpollNative.EPOLLERR)) != 0)
        {
            // The FIN may have come with the last request, in the same edge: no edge follows,
            // so the socket is read to its end (read(2) = 0) once the answers are out.
            _peerClosed = true;
        }
        Pump();
    }

    /// <summary>Posted by the commit's continuation. A connection may be posted twice for one
    /// decision (<see cref="Decide"/>), and a late post may come while its next decision
    /// waits: only a finished decision is answered.</summary>
    public void OnCommitted()
    {
        if (_closed || !_busy || !_pending.IsCompleted)
        {
            return;
        }
        _busy = false;
        Answer();
        Pump();
    }

    /// <summary>At a stop: closed now unless it owes an answer.</summary>
    public void CloseIfWaiting()
    {
        if (!_busy && !_sending)
        {
            Close();
        }
    }

    public void Close()
    {
        if (_closed)
        {
            return;
        }
        _closed = true;
        EpollNative.Close(_fd); // also leaves the epoll set
        _loop.Remove(this);
    }

    /// <summary>Parses what has arrived and reads more, until a decision is pending, the answer
    /// waits for room in the socket, or the socket has nothing more.</summary>
    private void Pump()
    {
        while (!_closed && !_busy && !_sending)
        {
            if (_start < _end)
            {
                SessionInput input = Session.Read(_buffer.AsSpan(_start, _end - _start), out int consumed);
                _start += consumed;
                if (input == SessionInput.Request)
                {
                    Decide();
                    continue;
                }
                if (input == SessionInput.Close)
                {
                    Close();
                    return;
                }
            }
            if (_loop.Stopped)
            {
                Close(); // a stop ends the wait for the next request
                return;
            }
            if (!_readable)
            {
                return;
            }
            ReadMore();
        }
    }

    private void ReadMore()
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_end == _buffer.Length)
        {
            MakeRoom();
        }
        int room = _buffer.Length - _end;
        if (room == 0)
        {
            Session.RefuseOversized();
            Close();
            return;
        }
        nint n;
        fixed (byte* p = &_buffer[_end])
        {
            n = EpollNative.Read(_fd, p, room);
        }
        if (n > 0)
        {
            _end += (int)n;
            // A short read of a stream socket drained it: the next data comes with a new edge.
            // Not so the end of a half-closed one, which is no data and brings no edge.
            if (n < room && !_peerClosed)
            {
                _readable = false;
            }
            return;
        }
        if (n == 0)
        {
            Session.OnClientClosed(_end - _start);
            Close();
            return;
        }
        int errno = EpollNative.LastError;
        if (errno == EpollNative.EAGAIN)
        {
            _readable = false;
        }
        else if (errno != EpollNative.EINTR)
        {
            Session.OnConnectionError(EpollNative.Describe(errno));
            Close();
        }
    }

    /// <summary>Compacts the buffer, or doubles it while a request may still fit the limits.</summary>
    private void MakeRoom()
    {
        if (_start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
            return;
        }
        int max = Session.MaxBufferedBytes;
        if (_buffer.Length < max)
        {
            byte[] bigger = new byte[Math.Min(_buffer.Length * 2, max)];
            Array.Copy(_buffer, bigger, _end);
            _buffer = bigger;
        }
    }

    private void Decide()
    {
        try
        {
            _pending = Session.Begin();
        }
        catch (Exception ex)
        {
            Session.OnFailed(ex);
            Close();
            return;
        }
        if (_pending.IsCompleted)
        {
            Answer();
            return;
        }
        _busy = true;
        if (_loop.InRound)
        {
            _loop.Hold(this);
            return;
        }
        AwaitCommit();
    }

    /// <summary>Has the loop answer this connection once its decision's commit has finished.</summary>
    internal void AwaitCommit()
    {
        if (_closed || !_busy)
        {
            return;
        }
        if (_pending.IsCompleted)
        {
            _loop.Post(this);
            return;
        }
        _pending.OnCompleted(_onCommitted);
        if (_pending.IsCompleted)
        {
            // It finished between the two looks: then the runtime queues the continuation to
            // the thread pool instead of running it on the store's thread, and the answer would
            // wait for a pool thread. Answered here instead; the late post finds nothing to do.
            _loop.Post(this);
        }
    }

    private void Answer()
    {
        string action;
        try
        {
            action = Session.Finish(_pending);
        }
        catch (Exception ex)
        {
            Session.OnFailed(ex);
            Close();
            return;
        }
        finally
        {
            _pending = default;
        }
        _output.ResetWrittenCount();
        _closeAfterAnswer = Session.Answer(action, _output);
        _sent = 0;
        _sending = true;
        Flush();
    }

    private void Flush()
    {
        ReadOnlySpan<byte> reply = _output.WrittenSpan;
        while (_sent < reply.Length)
        {
            nint n;
            fixed (byte* p = reply[_sent..])
            {
                n = EpollNative.Send(_fd, p, reply.Length - _sent, EpollNative.MSG_NOSIGNAL | EpollNative.MSG_DONTWAIT);
            }
            if (n >= 0)
            {
                _sent += (int)n;
                continue;
            }
            int errno = EpollNative.LastError;
            if (errno == EpollNative.EAGAIN)
            {
                return; // the rest goes at the next EPOLLOUT edge
            }
            if (errno != EpollNative.EINTR)
            {
                Session.OnConnectionError(EpollNative.Describe(errno));
                Close();
                return;
            }
        }
        _sending = false;
        if (_closeAfterAnswer)
        {
            Close();
        }
    }
}
