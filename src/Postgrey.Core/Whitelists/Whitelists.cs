namespace Postgrey.Core.Whitelists;

/// <summary>The client and recipient whitelists in force. Swapped whole on reload, so a decision
/// always sees one consistent pair.</summary>
public sealed record WhitelistSet(ClientWhitelist Clients, RecipientWhitelist Recipients)
{
    public static WhitelistSet Empty { get; } = new(ClientWhitelist.Empty, RecipientWhitelist.Empty);
}

/// <summary>Holds the current <see cref="WhitelistSet"/>; the host replaces it on SIGHUP.</summary>
public sealed class WhitelistProvider
{
    private volatile WhitelistSet _current;

    public WhitelistProvider(WhitelistSet initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        _current = initial;
    }

    public WhitelistSet Current => _current;

    public void Replace(WhitelistSet next)
    {
        ArgumentNullException.ThrowIfNull(next);
        _current = next;
    }
}
