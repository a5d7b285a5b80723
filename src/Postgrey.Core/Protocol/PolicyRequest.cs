namespace Postgrey.Core.Protocol;

/// <summary>
/// The attributes of one policy request that postgrey reads. A value is null when the
/// attribute was absent and "" when it was sent empty (a bounce has <c>sender=</c>); the
/// difference matters to the decision. One instance is reused for every request of a
/// connection, so repeated values can keep their strings.
/// </summary>
public sealed class PolicyRequest
{
    public string? Request { get; set; }
    public string? ClientAddress { get; set; }
    public string? ClientName { get; set; }
    public string? Sender { get; set; }
    public string? Recipient { get; set; }
    public string? Instance { get; set; }
    public string? QueueId { get; set; }

    /// <summary>Postfix 2.3 and later always send it; its presence selects the 4.2.0 prefix.</summary>
    public string? EtrnDomain { get; set; }

    /// <summary>Replaces the clock for this request when the server allows it.</summary>
    public string? PolicyTestTime { get; set; }

    /// <summary>When the request was read completely (a Stopwatch timestamp), for the answer
    /// time metric. <see cref="Reset"/> keeps it: an answer may be written after the reset.</summary>
    public long ReceivedTimestamp { get; set; }

    /// <summary>Clears the values for the next request on the same connection.</summary>
    public void Reset()
    {
        Request = null;
        ClientAddress = null;
        ClientName = null;
        Sender = null;
        Recipient = null;
        Instance = null;
        QueueId = null;
        EtrnDomain = null;
        PolicyTestTime = null;
    }
}
