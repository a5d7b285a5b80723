using System.Net;

namespace Postgrey.Core.Identity;

/// <summary>Which form the network part of a triplet key took with --lookup-by-identity.</summary>
public enum KeyForm
{
    /// <summary>postgrey's subnet (or --lookup-by-host address): nothing better was proven.</summary>
    Subnet,

    /// <summary>The sender's domain, whose SPF record authorises the client address.</summary>
    Spf,

    /// <summary>The registrable domain of the client's verified, non-dynamic host name.</summary>
    Host,
}

/// <summary>The network part of a key: the client's subnet, or a domain that stands for the
/// sender's whole outbound fleet.</summary>
public readonly record struct KeyIdentity(KeyForm Form, string? Domain)
{
    public static KeyIdentity Subnet { get; } = new(KeyForm.Subnet, null);

    /// <summary>How the decision line names it: <c>spf:example.com</c>, <c>host:example.net</c>, <c>subnet</c>.</summary>
    public string Describe() => Form switch
    {
        KeyForm.Spf => "spf:" + Domain,
        KeyForm.Host => "host:" + Domain,
        _ => "subnet",
    };
}

/// <summary>
/// The seam between the engine and --lookup-by-identity: asked before the request goes to the
/// store, so that DNS work never runs on the store's writer or on a transport's loop. It never
/// throws for bad DNS data: anything unproven is <see cref="KeyIdentity.Subnet"/>.
/// </summary>
public interface IKeyIdentityResolver
{
    /// <param name="client">the client address</param>
    /// <param name="clientName">Postfix's client_name: a forward-confirmed name, or "unknown"</param>
    /// <param name="sender">the envelope sender as sent (may be empty: the null sender)</param>
    /// <param name="cancellationToken">the request's</param>
    ValueTask<KeyIdentity> ResolveAsync(IPAddress client, string clientName, string sender, CancellationToken cancellationToken);
}
