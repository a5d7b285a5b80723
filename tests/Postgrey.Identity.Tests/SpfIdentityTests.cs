using Microsoft.Extensions.Time.Testing;
using Postgrey.Core.Identity;
using Postgrey.Testing;

namespace Postgrey.Identity.Tests;

/// <summary>
/// Rule 1 of --lookup-by-identity against a real DNS server on 127.0.0.1 (ARSoft.Tools.Net's,
/// in process) serving the records of each case; no test leaves the machine.
/// </summary>
public sealed class SpfIdentityTests : IDisposable
{
    private readonly TestDnsServer _dns = new();

    public SpfIdentityTests()
    {
        _dns.Txt("pool.test", "v=spf1 include:_spf.pool.test include:_spf6.pool.test -all")
            .Txt("_spf.pool.test", "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/25 -all")
            .Txt("_spf6.pool.test", "v=spf1 ip6:2001:db8:aa::/48 -all")
            .Txt("a.test", "v=spf1 a:out.a.test -all")
            .A("out.a.test", "192.0.2.77", "198.18.0.5")
            .Txt("mx.test", "v=spf1 mx -all")
            .Mx("mx.test", "mx1.mx.test", "mx2.mx.test")
            .A("mx1.mx.test", "198.18.1.1")
            .A("mx2.mx.test", "198.18.2.2")
            .Txt("fail.test", "v=spf1 ip4:198.51.100.0/24 -all")
            .Txt("softfail.test", "v=spf1 ip4:198.51.100.0/24 ~all")
            .Txt("neutral.test", "v=spf1 ip4:198.51.100.0/24 ?all")
            .Txt("none.test", "some other text, no SPF")
            .Txt("wide14.test", "v=spf1 ip4:52.100.0.0/14 -all");
    }

    [Theory]
    [InlineData("203.0.113.9", "bounce-42@pool.test", "pool.test")] // ip4: through include:
    [InlineData("198.51.100.200", "news@POOL.test", "pool.test")] // another /16, another include: entry
    [InlineData("2001:db8:aa::25", "news@pool.test", "pool.test")] // ip6: through include:
    [InlineData("198.18.0.5", "x@a.test", "a.test")] // a:
    [InlineData("198.18.2.2", "x@mx.test", "mx.test")] // mx
    [InlineData("52.101.7.1", "x@wide14.test", "wide14.test")] // a /14 as Microsoft 365 publishes: within the bound
    public async Task Pass_KeysOnTheSendersDomain(string client, string sender, string domain)
    {
        using var harness = new Harness(_dns.Port);

        KeyIdentity identity = await harness.ResolveAsync(client, sender);

        Assert.Equal(new KeyIdentity(KeyForm.Spf, domain), identity);
        Assert.Equal("spf:" + domain, identity.Describe());
        Assert.Empty(harness.Problems);
    }

    [Theory]
    [InlineData("x@fail.test")]
    [InlineData("x@softfail.test")]
    [InlineData("x@neutral.test")]
    [InlineData("x@none.test")]
    [InlineData("x@nxdomain.test")]
    [InlineData("x@pool.test")] // pool.test's policy does not list 192.0.2.99
    [InlineData("")] // the null sender
    public async Task AnythingButPass_FallsBackToTheHostName_ThenTheSubnet(string sender)
    {
        using var harness = new Harness(_dns.Port);

        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("192.0.2.99", sender, "unknown"));
        Assert.Equal(new KeyIdentity(KeyForm.Host, "example.co.uk"), await harness.ResolveAsync("192.0.2.99", sender, "smtp2.out.example.co.uk"));
        Assert.Empty(harness.Problems); // a fail is an answer, not a problem
    }

    [Theory]
    [InlineData("v=spf1 +all", "+all")]
    [InlineData("v=spf1 all", "+all")]
    [InlineData("v=spf1 ip4:203.0.113.0/24 ip4:10.0.0.0/8 -all", "wider than /13")]
    [InlineData("v=spf1 ip4:203.0.0.0/8 -all", "wider than /13")]
    [InlineData("v=spf1 ip4:128.0.0.0/1 -all", "wider than /13")]
    [InlineData("v=spf1 ip6:2001:db8::/16 ip4:203.0.113.0/24 -all", "wider than /32")]
    [InlineData("v=spf1 include:open.test -all", "+all")]
    [InlineData("v=spf1 exists:open-exists.test -all", "passes 192.0.2.1 too")]
    public async Task PassThatProvesNothing_FallsBack_AndIsLogged(string record, string why)
    {
        _dns.Txt("spammer.test", record).Txt("open.test", "v=spf1 +all").A("open-exists.test", "127.0.0.2");
        using var harness = new Harness(_dns.Port);

        KeyIdentity identity = await harness.ResolveAsync("203.0.113.9", "x@spammer.test");

        Assert.Equal(KeyIdentity.Subnet, identity);
        string problem = Assert.Single(harness.Problems);
        Assert.StartsWith("SPF of spammer.test: pass that proves nothing (", problem, StringComparison.Ordinal);
        Assert.Contains(why, problem, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MoreThanTenDnsMechanisms_IsPermError_AndFallsBack()
    {
        // Eleven include:s, each an existing record; the client is in the last one.
        var includes = new List<string>();
        for (int i = 1; i <= 11; i++)
        {
            _dns.Txt($"i{i}.many.test", i == 11 ? "v=spf1 ip4:203.0.113.0/24 -all" : $"v=spf1 ip4:198.18.{i}.0/24 -all");
            includes.Add($"include:i{i}.many.test");
        }
        _dns.Txt("many.test", "v=spf1 " + string.Join(' ', includes) + " -all")
            .Txt("ten.test", "v=spf1 " + string.Join(' ', includes.Skip(1)) + " -all");
        using var harness = new Harness(_dns.Port);

        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", "x@many.test"));
        Assert.Contains(harness.Problems, p => p.StartsWith("SPF of many.test: permerror", StringComparison.Ordinal));
        // Ten are allowed.
        Assert.Equal(new KeyIdentity(KeyForm.Spf, "ten.test"), await harness.ResolveAsync("203.0.113.9", "x@ten.test"));
    }

    [Fact]
    public async Task MoreThanTwoVoidLookups_IsPermError_EvenIfALaterMechanismWouldPass()
    {
        _dns.Txt("voids.test", "v=spf1 a:nx1.voids.test a:nx2.voids.test a:nx3.voids.test ip4:203.0.113.0/24 -all")
            .Txt("twovoids.test", "v=spf1 a:nx1.voids.test a:nx2.voids.test ip4:203.0.113.0/24 -all");
        using var harness = new Harness(_dns.Port);

        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", "x@voids.test"));
        Assert.Contains(harness.Problems, p => p.StartsWith("SPF of voids.test: permerror (more than 2 void lookups)", StringComparison.Ordinal));
        Assert.Equal(new KeyIdentity(KeyForm.Spf, "twovoids.test"), await harness.ResolveAsync("203.0.113.9", "x@twovoids.test"));
    }

    [Theory]
    [InlineData("v=spf1 ip4:not-an-address -all")]
    [InlineData("v=spf1 ip4:203.0.113.0/99 -all")]
    [InlineData("v=spf1 include:loop-b.test -all")] // loop-b includes loop-a includes loop-b ...
    [InlineData("v=spf1 redirect=bad.test redirect=bad.test")]
    [InlineData("v=spf1 ip4:203.0.113.0/24 \u0001\u00ff%{zz} -all")]
    public async Task MalformedRecordsAndLoops_FallBack_LoggedOncePerDomainPerHour(string record)
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        _dns.Txt("broken.test", record)
            .Txt("loop-a.test", "v=spf1 include:loop-b.test -all")
            .Txt("loop-b.test", "v=spf1 include:loop-a.test ip4:203.0.113.0/24 -all");
        using var harness = new Harness(_dns.Port, time: time);

        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", "x@broken.test"));
        }
        Assert.Single(harness.Problems);
        Assert.StartsWith("SPF of broken.test: ", harness.Problems[0], StringComparison.Ordinal);

        time.Advance(TimeSpan.FromMinutes(61));
        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", "x@broken.test"));
        Assert.Equal(2, harness.Problems.Count);
    }

    [Fact]
    public async Task HugeTxtAnswer_OverTcp_FallsBack()
    {
        // 40 kB of TXT strings: more than UDP carries, so the client goes on over TCP.
        _dns.Txt("huge.test", "v=spf1 " + string.Concat(Enumerable.Repeat("ip4:203.0.113.0/24 garbage-", 1500)) + " -all")
            .Txt("huge.test", new string('x', 8000));
        using var harness = new Harness(_dns.Port);

        Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", "x@huge.test"));
        Assert.Single(harness.Problems);
    }

    [Fact]
    public async Task ServerThatNeverAnswers_TimesOut_ToTheSubnetKey()
    {
        using var silent = new BrokenDnsServer(garbage: false);
        using var harness = new Harness(silent.Port, timeout: TimeSpan.FromMilliseconds(300));

        // Not stuck: the answer comes (within the test's generous bound), and it is the fallback.
        KeyIdentity identity = await harness.ResolveAsync("203.0.113.9", "x@pool.test", "unknown").WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(KeyIdentity.Subnet, identity);
        Assert.StartsWith("SPF of pool.test: timeout", Assert.Single(harness.Problems), StringComparison.Ordinal);
        // Rule 2 still applies: it needs no DNS.
        Assert.Equal(new KeyIdentity(KeyForm.Host, "example.org"),
            await harness.ResolveAsync("203.0.113.9", "x@pool.test", "mta7.example.org").WaitAsync(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public async Task ServerSendingGarbage_FallsBack()
    {
        using var garbage = new BrokenDnsServer(garbage: true);
        using var harness = new Harness(garbage.Port, timeout: TimeSpan.FromMilliseconds(500));

        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(KeyIdentity.Subnet, await harness.ResolveAsync("203.0.113.9", $"x@d{i}.test").WaitAsync(TimeSpan.FromSeconds(20)));
        }
        Assert.Equal(5, harness.Problems.Count);
    }

    [Fact]
    public async Task Answers_AreCachedForTheirTtl()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        _dns.Ttl = 120;
        _dns.Txt("ttl.test", "v=spf1 include:_spf.ttl.test -all").Txt("_spf.ttl.test", "v=spf1 ip4:203.0.113.0/24 -all");
        using var harness = new Harness(_dns.Port, time: time);

        Assert.Equal(KeyForm.Spf, (await harness.ResolveAsync("203.0.113.9", "x@ttl.test")).Form);
        int asked = _dns.Queries;
        Assert.Equal(KeyForm.Spf, (await harness.ResolveAsync("203.0.113.10", "y@ttl.test")).Form);
        Assert.Equal(asked, _dns.Queries); // nothing asked again within the TTL

        time.Advance(TimeSpan.FromSeconds(121));
        Assert.Equal(KeyForm.Spf, (await harness.ResolveAsync("203.0.113.9", "x@ttl.test")).Form);
        Assert.True(_dns.Queries > asked, "asked again once the TTL ran out");
    }

    public void Dispose() => _dns.Dispose();
}
