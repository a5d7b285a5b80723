using System.Net;
using BenchmarkDotNet.Attributes;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Whitelists;

namespace Postgrey.Benchmarks;

[MemoryDiagnoser]
public class KeyBenchmarks
{
    private readonly GreylistOptions _options = new();
    private readonly IPAddress _v4 = IPAddress.Parse("192.0.2.7");
    private readonly IPAddress _v6 = IPAddress.Parse("2a01:222:f400:fe44::1");

    [Benchmark]
    public string IPv4Plain() => TripletKey.Build(_v4, "alice@example.net", "bob@example.org", _options);

    [Benchmark]
    public string IPv6Verp() => TripletKey.Build(_v6, "bounce-12345-678@lists.example.net", "Bob@Example.ORG", _options);

    [Benchmark]
    public string ClientKeyIPv6() => TripletKey.ClientKey(_v6, _options);
}

/// <summary>The shipped client list plus 300 generated names, 50 networks and 5 regexes: a
/// miss (the common case) walks every suffix and every regex.</summary>
[MemoryDiagnoser]
public class WhitelistBenchmarks
{
    private ClientWhitelist _clients = ClientWhitelist.Empty;
    private RecipientWhitelist _recipients = RecipientWhitelist.Empty;
    private readonly IPAddress _address = IPAddress.Parse("198.51.100.77");

    [GlobalSetup]
    public void Setup()
    {
        var warnings = new List<WhitelistWarning>();
        var builder = new ClientWhitelist.Builder().Add(new StringReader(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "etc", "whitelist_clients"))), "shipped", warnings);
        for (int i = 0; i < 300; i++)
        {
            builder.AddEntry($"mail{i}.example{i % 17}.com");
        }
        for (int i = 0; i < 50; i++)
        {
            builder.AddEntry($"10.{i}.0.0/16");
        }
        for (int i = 0; i < 5; i++)
        {
            builder.AddEntry($"/^outbound{i}-[0-9]+\\.mailer\\.example$/");
        }
        _clients = builder.Build();
        _recipients = new RecipientWhitelist.Builder().Add(new StringReader(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "etc", "whitelist_recipients"))), "shipped", warnings).Build();
    }

    [Benchmark]
    public bool ClientNameMiss() => _clients.MatchesName("mx12.dsl.provider.example.net");

    [Benchmark]
    public bool ClientNameHit() => _clients.MatchesName("mail-wr1-f54.google.com");

    [Benchmark]
    public bool ClientAddressMiss() => _clients.MatchesAddress(_address);

    [Benchmark]
    public bool RecipientMiss() => _recipients.Matches("someone@example.org");
}
