using System.Net;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Identity;
using Postgrey.Testing;

namespace Postgrey.Identity.Tests;

/// <summary>An <see cref="IdentityResolver"/> pointed at a DNS server on 127.0.0.1, its log kept.</summary>
internal sealed class Harness : IDisposable
{
    private readonly LoggerFactory _loggerFactory;

    public Harness(int dnsPort, TimeSpan? timeout = null, TimeProvider? time = null, string? publicSuffixList = null)
    {
        _loggerFactory = new LoggerFactory([Logs]);
        Resolver = new IdentityResolver(
            new IdentityOptions
            {
                DnsServer = IPAddress.Loopback,
                DnsPort = dnsPort,
                Timeout = timeout ?? TimeSpan.FromSeconds(30), // generous: a loaded CI machine JITs the library first
                PublicSuffixListPath = publicSuffixList ?? PublicSuffixList.DebianPath,
            },
            time ?? TimeProvider.System,
            _loggerFactory.CreateLogger<IdentityResolver>());
    }

    public CapturingLoggerProvider Logs { get; } = new();

    public IdentityResolver Resolver { get; }

    public IReadOnlyList<string> Problems => Logs.Messages().Where(m => m.StartsWith("SPF of ", StringComparison.Ordinal)).ToList();

    public async Task<KeyIdentity> ResolveAsync(string client, string sender, string clientName = "unknown") =>
        await Resolver.ResolveAsync(IPAddress.Parse(client), clientName, sender, CancellationToken.None);

    public void Dispose()
    {
        Resolver.Dispose();
        _loggerFactory.Dispose();
    }
}
