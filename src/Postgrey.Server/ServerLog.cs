using Microsoft.Extensions.Logging;

namespace Postgrey.Server;

/// <summary>Every line the server writes (listeners, accept gate, sessions, transports), in
/// one place: the same event for the same thing whichever transport serves it.</summary>
internal static partial class ServerLog
{
    [LoggerMessage(1001, LogLevel.Information, "listening on {EndPoint}", EventName = "Listening")]
    public static partial void Listening(ILogger logger, string endPoint);

    [LoggerMessage(1002, LogLevel.Warning, "not listening on {EndPoint}: {Reason}", EventName = "OptionalBindSkipped")]
    public static partial void OptionalBindSkipped(ILogger logger, string endPoint, string reason);

    [LoggerMessage(1003, LogLevel.Warning, "accept failed ({Error}); retrying in {Delay} ms", EventName = "AcceptFailed")]
    public static partial void AcceptFailed(ILogger logger, string error, int delay);

    [LoggerMessage(1004, LogLevel.Warning, "more than {Max} connections: closing new ones until some end (--max-connections)", EventName = "TooManyConnections")]
    public static partial void TooManyConnections(ILogger logger, int max);

    [LoggerMessage(1005, LogLevel.Warning, "{Count} connections still open at the end of the shutdown timeout", EventName = "DrainTimedOut")]
    public static partial void DrainTimedOut(ILogger logger, int count);

    [LoggerMessage(1006, LogLevel.Information, "listening on {EndPoint} (socket passed by systemd)", EventName = "ListeningInherited")]
    public static partial void ListeningInherited(ILogger logger, string endPoint);

    [LoggerMessage(1007, LogLevel.Debug, "socket file {Path} not removed: {Reason}", EventName = "SocketFileNotRemoved")]
    public static partial void SocketFileNotRemoved(ILogger logger, string path, string reason);

    [LoggerMessage(1008, LogLevel.Warning, "{Peer}: connection dropped: {Error}", EventName = "ConnectionDropped")]
    public static partial void ConnectionDropped(ILogger logger, string peer, string error);

    [LoggerMessage(1009, LogLevel.Critical, "the connection loop failed; stopping", EventName = "LoopFailed")]
    public static partial void LoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(2001, LogLevel.Warning, "ignoring garbage: <{Line}>", EventName = "Garbage")]
    public static partial void Garbage(ILogger logger, string line);

    [LoggerMessage(2002, LogLevel.Warning, "{Peer} sent {What}; closing the connection", EventName = "LimitExceeded")]
    public static partial void LimitExceeded(ILogger logger, string peer, string what);

    [LoggerMessage(2003, LogLevel.Debug, "{Peer} idle for {Seconds} s; closing the connection", EventName = "IdleTimeout")]
    public static partial void IdleTimeout(ILogger logger, string peer, int seconds);

    [LoggerMessage(2004, LogLevel.Debug, "{Peer} closed the connection in the middle of a request ({Bytes} bytes unanswered)", EventName = "IncompleteRequest")]
    public static partial void IncompleteRequest(ILogger logger, string peer, long bytes);

    [LoggerMessage(2005, LogLevel.Debug, "{Peer}: connection error: {Message}", EventName = "ConnectionError")]
    public static partial void ConnectionError(ILogger logger, string peer, string message);

    [LoggerMessage(2006, LogLevel.Error, "{Peer}: connection failed", EventName = "ConnectionFailed")]
    public static partial void ConnectionFailed(ILogger logger, string peer, Exception exception);
}
