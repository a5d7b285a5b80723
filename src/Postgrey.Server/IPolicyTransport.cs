namespace Postgrey.Server;

/// <summary>How connections are served: the epoll loop (Linux) or .NET's sockets (portable).
/// Either takes its connections through the <see cref="ConnectionGate"/> and serves each with a
/// <see cref="PolicySession"/>.</summary>
internal interface IPolicyTransport : IDisposable
{
    /// <summary>Completes when serving has ended: stopped and every connection closed.</summary>
    Task Completion { get; }

    void Start();

    /// <summary>How long the transport's thread has not come round (Environment.TickCount64
    /// milliseconds): a loop blocked in a decision or a system call. Zero for a transport
    /// without a thread of its own.</summary>
    long StalledMilliseconds { get; }

    /// <summary>Stops accepting (the listeners may be closed once this completes) and closes
    /// every connection that is not answering a request; the others close after their answer.</summary>
    Task StopAcceptingAsync();
}
