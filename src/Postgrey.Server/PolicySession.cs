using System.Buffers;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;

namespace Postgrey.Server;

/// <summary>What every session of a server shares.</summary>
internal sealed record SessionSettings(GreylistEngine Engine, PolicyLimits Limits, bool Exim, ILogger Logger);

/// <summary>What <see cref="PolicySession.Read(ReadOnlySpan{byte}, out int)"/> found.</summary>
internal enum SessionInput
{
    /// <summary>No whole request yet: read more.</summary>
    NeedMoreData,

    /// <summary><see cref="PolicySession.Request"/> is ready to be decided.</summary>
    Request,

    /// <summary>A limit was broken (and logged): close the connection.</summary>
    Close,
}

/// <summary>
/// One connection's side of the policy protocol, whatever carries its bytes: bytes in,
/// requests out; decisions in, answer bytes out; the limits, <c>--exim</c>'s one request per
/// connection, the idle time and the log lines of a connection. Both transports drive one per
/// connection, one request at a time, on one thread at a time.
/// </summary>
internal sealed class PolicySession
{
    private readonly SessionSettings _protocol;
    private readonly PolicyRequestParser _parser;

    public PolicySession(SessionSettings protocol, string peer)
    {
        _protocol = protocol;
        Peer = peer;
        _parser = new PolicyRequestParser(protocol.Limits);
        WaitingSince = Environment.TickCount64;
    }

    public string Peer { get; }

    /// <summary>The request being read, then decided; reset once answered.</summary>
    public PolicyRequest Request { get; } = new();

    /// <summary>When the connection began waiting for its next request (opened, or its last
    /// answer written): bytes that make no request do not keep it open.</summary>
    public long WaitingSince { get; private set; }

    public TimeSpan IdleTimeout => _protocol.Limits.IdleTimeout;

    /// <summary>The most a transport buffers for one request: the parser refuses anything
    /// longer before its buffer grows past this.</summary>
    public int MaxBufferedBytes => Math.Max(_protocol.Limits.MaxRequestBytes, _protocol.Limits.MaxLineBytes) + 4096;

    /// <summary>Parses <paramref name="input"/> up to the end of a request; garbage lines are
    /// logged and skipped.</summary>
    public SessionInput Read(ReadOnlySpan<byte> input, out int consumed)
    {
        consumed = 0;
        while (true)
        {
            PolicyReadStatus status = _parser.TryRead(input[consumed..], Request, out int used);
            consumed += used;
            if (Classify(status) is { } result)
            {
                return result;
            }
        }
    }

    /// <inheritdoc cref="Read(ReadOnlySpan{byte}, out int)"/>
    public SessionInput Read(ref ReadOnlySequence<byte> input)
    {
        while (true)
        {
            if (Classify(_parser.TryRead(ref input, Request)) is { } result)
            {
                return result;
            }
        }
    }

    /// <summary>Starts deciding <see cref="Request"/>; <see cref="Finish"/> once completed.</summary>
    public PendingDecision Begin() => _protocol.Engine.Begin(Request, CancellationToken.None);

    /// <summary>The action for a decision begun by <see cref="Begin"/> and completed: produced
    /// (and logged) on the caller's thread.</summary>
    public string Finish(PendingDecision pending) => _protocol.Engine.Finish(Request, pending);

    /// <summary>Decides <see cref="Request"/> in one go, for a transport that awaits.</summary>
    public ValueTask<string> DecideAsync() => _protocol.Engine.DecideAsync(Request, CancellationToken.None);

    /// <summary>Writes the answer and makes ready for the next request; true when the
    /// connection then closes (--exim: one request per connection).</summary>
    public bool Answer(string action, IBufferWriter<byte> output)
    {
        PolicyResponseWriter.Write(output, action);
        ServerMetrics.Answered(Request);
        Request.Reset();
        WaitingSince = Environment.TickCount64;
        return _protocol.Exim;
    }

    /// <summary>Waiting for a request longer than the idle time at <paramref name="now"/>
    /// (Environment.TickCount64).</summary>
    public bool IsIdle(long now) => now - WaitingSince > (long)IdleTimeout.TotalMilliseconds;

    public void OnIdle() => ServerLog.IdleTimeout(_protocol.Logger, Peer, (int)IdleTimeout.TotalSeconds);

    /// <summary>The client closed its side; <paramref name="unread"/> bytes made no request.</summary>
    public void OnClientClosed(long unread)
    {
        if (unread > 0)
        {
            ServerLog.IncompleteRequest(_protocol.Logger, Peer, unread);
        }
    }

    public void OnConnectionError(string message) => ServerLog.ConnectionError(_protocol.Logger, Peer, message);

    public void OnFailed(Exception exception) => ServerLog.ConnectionFailed(_protocol.Logger, Peer, exception);

    /// <summary>null: parse on; else what to tell the transport.</summary>
    private SessionInput? Classify(PolicyReadStatus status)
    {
        switch (status)
        {
            case PolicyReadStatus.NeedMoreData:
                return SessionInput.NeedMoreData;
            case PolicyReadStatus.Request:
                return SessionInput.Request;
            case PolicyReadStatus.GarbageLine:
                ServerLog.Garbage(_protocol.Logger, _parser.LastGarbage);
                return null;
            case PolicyReadStatus.LineTooLong:
                return Refuse($"a line longer than {_protocol.Limits.MaxLineBytes} bytes");
            case PolicyReadStatus.TooManyAttributes:
                return Refuse($"a request of more than {_protocol.Limits.MaxAttributesPerRequest} attributes");
            case PolicyReadStatus.RequestTooLarge:
                return Refuse($"a request larger than {_protocol.Limits.MaxRequestBytes} bytes");
            default:
                throw new ArgumentOutOfRangeException(nameof(status), status, null);
        }
    }

    /// <summary>The buffer is full without a whole request: cannot happen within the parser's
    /// limits, but a transport must never read(2) into no room.</summary>
    public SessionInput RefuseOversized() => Refuse($"a request larger than {_protocol.Limits.MaxRequestBytes} bytes");

    private SessionInput Refuse(string what)
    {
        ServerLog.LimitExceeded(_protocol.Logger, Peer, what);
        return SessionInput.Close;
    }
}
