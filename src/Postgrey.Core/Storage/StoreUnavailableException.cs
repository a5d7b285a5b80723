namespace Postgrey.Core.Storage;

/// <summary>
/// The store cannot decide now (its database server is unreachable, or did not answer within
/// the bounded wait). The store has already said so in its log, once per change of state; the
/// engine answers DUNNO without a line of its own, so that an outage does not write one error
/// per request.
/// </summary>
public sealed class StoreUnavailableException : Exception
{
    public StoreUnavailableException()
    {
    }

    public StoreUnavailableException(string message)
        : base(message)
    {
    }

    public StoreUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
