namespace Postgrey.Differential.Tests;

/// <summary>
/// The corpus: every rule of postgrey's decision (shared/POSTGREY-REFERENCE.md) as request
/// sequences with explicit times, and each deliberate difference asserted on its own.
/// </summary>
internal static class Scenarios
{
    public const string ClientWhitelist = """
        # client whitelist shared by both servers
        whitelisted.example
        /^mail\d+\.regex\.example$/
        192.0.2.10
        198.51.100.0/25
        203.0.113
        2001:db8:aaaa::/48
        10.250
        """;

    public const string RecipientWhitelist = """
        postmaster@
        abuse@
        vip@special.example
        whitelisted-domain.example
        /^list-[a-z]+@lists\.example$/
        """;

    public static readonly IReadOnlyDictionary<string, string[]> FlagSets = new Dictionary<string, string[]>
    {
        ["default"] = [],
        ["retry-hours"] = ["--retry-window=1h"],
        ["cidr"] = ["--ipv4cidr=16", "--ipv6cidr=48"],
        ["by-host"] = ["--lookup-by-host"],
        ["awl-2"] = ["--auto-whitelist-clients=2"],
        ["awl-off"] = ["--auto-whitelist-clients=0"],
        ["privacy"] = ["--privacy"],
        ["exim"] = ["--exim"],
        ["texts"] = ["--greylist-action=451", "--greylist-text=Come back in %s seconds to %r", "--x-greylist-header=X-Postgrey: waited %t s by %h (%v) on %d", "--delay=120"],
        ["digit-text"] = ["--greylist-text=4.7.1 try again later"],
        ["diff-delay-zero"] = ["--delay=0"],
        ["diff"] = [],
        ["diff-crash"] = [],
    };

    private static Step[] Steps(params Step[] steps) => steps;

    public static readonly IReadOnlyList<Scenario> All =
    [
        // -- the triplet and its timing
        new("new triplet is greylisted", "default", c => Steps(c.R(0))),
        new("early retry is greylisted with the seconds missing", "default", c => Steps(c.R(0), c.R(100), c.R(299))),
        new("retry after the delay passes with the header", "default", c => Steps(c.R(0), c.R(312))),
        new("retry exactly at the delay passes", "default", c => Steps(c.R(0), c.R(300))),
        new("after a pass, DUNNO without header", "default", c => Steps(c.R(0), c.R(301), c.R(400), c.R(5000))),
        new("first retry after the retry window starts again", "default", c => Steps(c.R(0), c.R((2 * 86400) + 1), c.R((2 * 86400) + 302))),
        new("retry window in hours", "retry-hours", c => Steps(c.R(0), c.R(3601), c.R(3700), c.R(3902))),
        new("a passed triplet does not expire with the retry window", "default", c => Steps(c.R(0), c.R(301), c.R(10 * 86400))),
        new("first seen in the future is corrected", "default", c => Steps(c.R(5000), c.R(0), c.R(301))),
        new("same second twice is still new", "default", c => Steps(c.R(0), c.R(0))),

        // -- client network
        new("IPv4 neighbours in a /24 share the triplet", "default", c => Steps(c.R(0, client: $"10.{c.Number}.0.1"), c.R(301, client: $"10.{c.Number}.0.200"))),
        new("IPv4 in another /24 is another triplet", "default", c => Steps(c.R(0, client: $"10.{c.Number}.0.1"), c.R(301, client: $"10.{c.Number}.1.1"))),
        new("--ipv4cidr=16 widens the network", "cidr", c => Steps(c.R(0, client: $"10.{c.Number}.0.1"), c.R(301, client: $"10.{c.Number}.9.9"))),
        new("IPv6 neighbours in a /64 share the triplet", "default", c => Steps(c.R(0, client: $"2001:db8:{c.Number:x}:1::1"), c.R(301, client: $"2001:db8:{c.Number:x}:1:ffff::2"))),
        new("IPv6 in another /64 is another triplet", "default", c => Steps(c.R(0, client: $"2001:db8:{c.Number:x}:1::1"), c.R(301, client: $"2001:db8:{c.Number:x}:2::1"))),
        new("--ipv6cidr=48 widens the network", "cidr", c => Steps(c.R(0, client: $"2001:db8:{c.Number:x}:1::1"), c.R(301, client: $"2001:db8:{c.Number:x}:2::1"))),
        new("IPv6 spelled differently is the same client", "default", c => Steps(c.R(0, client: $"2001:0db8:{c.Number:x}:0001:0000::1"), c.R(301, client: $"2001:DB8:{c.Number:X}:1::5"))),
        new("--lookup-by-host separates neighbours", "by-host", c => Steps(c.R(0, client: $"10.{c.Number}.0.1"), c.R(301, client: $"10.{c.Number}.0.2"), c.R(302, client: $"10.{c.Number}.0.1"))),
        new("--lookup-by-host with IPv6", "by-host", c => Steps(c.R(0, client: $"2001:db8:{c.Number:x}::1"), c.R(301, client: $"2001:db8:{c.Number:x}::1"))),

        // -- sender and recipient normalisation
        new("sender case does not matter", "default", c => Steps(c.R(0, sender: "Alice@Example.NET"), c.R(301, sender: "alice@example.net"))),
        new("recipient case does not matter", "default", c => Steps(c.R(0, recipient: $"Bob{c.Number}@Rcpt.Example"), c.R(301, recipient: $"bob{c.Number}@rcpt.example"))),
        new("+extension of the sender is dropped", "default", c => Steps(c.R(0, sender: "list+123-abc@lists.example"), c.R(301, sender: "list+999-xyz@lists.example"))),
        new("+extension of the recipient is kept", "default", c => Steps(c.R(0, recipient: $"u{c.Number}+a@rcpt.example"), c.R(301, recipient: $"u{c.Number}+b@rcpt.example"))),
        new("VERP digits are folded", "default", c => Steps(c.R(0, sender: "bounce-12345-678@mailer.example"), c.R(301, sender: "bounce-99999-1@mailer.example"))),
        new("digits inside a word are kept", "default", c => Steps(c.R(0, sender: "user12@mailer.example"), c.R(301, sender: "user13@mailer.example"))),
        new("BATV prvs=tag=local", "default", c => Steps(c.R(0, sender: "prvs=1234567890=alice@batv.example"), c.R(301, sender: "prvs=0987654321=alice@batv.example"))),
        new("BATV prvs=local=tag", "default", c => Steps(c.R(0, sender: "prvs=alice=1234567890@batv2.example"), c.R(301, sender: "alice@batv2.example"))),
        new("BATV with both parts tag-like", "default", c => Steps(c.R(0, sender: "prvs=abcdefghij=klmnopqrst@batv3.example"), c.R(301, sender: "klmnopqrst@batv3.example"))),
        new("bounce (empty sender)", "default", c => Steps(c.R(0, sender: ""), c.R(301, sender: ""))),
        new("sender without @ is kept as is", "default", c => Steps(c.R(0, sender: "MAILER-DAEMON-42"), c.R(301, sender: "mailer-daemon-42"), c.R(302, sender: "MAILER-DAEMON-43"))),
        new("8-bit sender, ASCII-only case folding", "default", c => Steps(c.R(0, sender: "jörg.1@exämple.net"), c.R(301, sender: "JöRG.2@EXäMPLE.net"), c.R(302, sender: "JÖRG.3@exämple.net"))),
        new("values are cut at 512 bytes", "default", c => Steps(c.R(0, recipient: c.Number + new string('r', 600) + "@a.example"), c.R(301, recipient: c.Number + new string('r', 600) + "@b.example"))),

        // -- whitelists
        new("client whitelist: host name", "default", c => Steps(c.R(0, name: "whitelisted.example"))),
        new("client whitelist: subdomain, any case", "default", c => Steps(c.R(0, name: "MX1.Whitelisted.Example"), c.R(1, name: "notwhitelisted.example"))),
        new("client whitelist: regex", "default", c => Steps(c.R(0, name: "mail42.regex.example"), c.R(1, name: "xmail42.regex.example"))),
        new("client whitelist: IPv4 address", "default", c => Steps(c.R(0, client: "192.0.2.10"), c.R(1, client: "192.0.2.11", recipient: $"x{c.Number}@rcpt.example"))),
        new("client whitelist: IPv4 network", "default", c => Steps(c.R(0, client: "198.51.100.127"), c.R(1, client: "198.51.100.128"))),
        new("client whitelist: a.b.c is a /24", "default", c => Steps(c.R(0, client: "203.0.113.254"))),
        new("client whitelist: IPv6 network", "default", c => Steps(c.R(0, client: "2001:db8:aaaa:1::9"), c.R(1, client: "2001:db8:aaab::9"))),
        new("recipient whitelist: user@", "default", c => Steps(c.R(0, recipient: "postmaster@anything.example"), c.R(1, recipient: "Abuse+reports@x.example"))),
        new("recipient whitelist: user@domain and +ext", "default", c => Steps(c.R(0, recipient: "vip@special.example"), c.R(1, recipient: "VIP+tag@special.example"), c.R(2, recipient: "vip@other.example"))),
        new("recipient whitelist: domain and subdomains", "default", c => Steps(c.R(0, recipient: "a@whitelisted-domain.example"), c.R(1, recipient: "a@sub.whitelisted-domain.example"), c.R(2, recipient: "a@notwhitelisted-domain.example"))),
        new("recipient whitelist: regex", "default", c => Steps(c.R(0, recipient: "list-news@lists.example"), c.R(1, recipient: "list-42@lists.example"))),

        // -- auto-whitelist
        new("auto-whitelist after 5 passes an hour apart", "default", AutoWhitelist(5)),
        new("auto-whitelist counts one pass per hour", "awl-2", c => Steps(
            c.R(0, recipient: "a@r.example"), c.R(0, recipient: "b@r.example"),
            c.R(301, recipient: "a@r.example"), c.R(302, recipient: "b@r.example"),
            c.R(400, recipient: "c@r.example"),
            c.R(3702, recipient: "c@r.example"), c.R(3800, recipient: "d@r.example"))),
        new("--auto-whitelist-clients=2", "awl-2", AutoWhitelist(2)),
        new("--auto-whitelist-clients=0 disables it", "awl-off", AutoWhitelist(5)),
        new("auto-whitelist of an IPv6 client without a name", "awl-2", c => Steps(
            c.R(0, client: $"2001:db8:{c.Number:x}::7", name: "unknown", recipient: "a@r.example"), c.R(301, client: $"2001:db8:{c.Number:x}::7", name: "", recipient: "a@r.example"),
            c.R(4000, client: $"2001:db8:{c.Number:x}::7", name: "", recipient: "b@r.example"), c.R(4301, client: $"2001:db8:{c.Number:x}::7", name: "", recipient: "b@r.example"),
            c.R(4302, client: $"2001:db8:{c.Number:x}::7", recipient: "c@r.example"))),

        // -- options
        new("--privacy keeps the behaviour", "privacy", c => Steps(c.R(0), c.R(100), c.R(301), c.R(302))),
        new("--privacy with the auto-whitelist", "privacy", AutoWhitelist(5)),
        new("--exim: one request per connection", "exim", c => Steps(c.R(0), c.R(301), c.R(302))) { ConnectionPerRequest = true },
        new("custom action, text and header", "texts", c => Steps(c.R(0), c.R(60), c.R(121))),
        new("text starting with a digit gets no 4.2.0", "digit-text", c => Steps(c.R(0))),
        new("no etrn_domain, no 4.2.0", "default", c => Steps(c.R(0) with { EtrnDomain = false })),
        new("one X-Greylist header per message", "default", c => Steps(
            c.R(0, recipient: "a@r.example"), c.R(0, recipient: "b@r.example"),
            c.R(400, recipient: "a@r.example", instance: $"m{c.Number}"), c.R(400, recipient: "b@r.example", instance: $"m{c.Number}"))),
        new("queue_id prefixes the log line", "default", c => Steps(c.R(0) with { QueueId = "4BF2A1C3D" }, c.R(301) with { QueueId = "4BF2A1C3E" })),

        // -- bad input
        new("missing attributes: DUNNO", "default", c => Steps(
            c.R(0) with { Omit = ["client_name"] }, c.R(0) with { Omit = ["sender"] },
            c.R(0) with { Omit = ["recipient"] }, c.R(0) with { Omit = ["client_address"] }, c.R(1))),
        new("garbage line before the request", "default", c => Steps(c.R(0) with { GarbageLine = "this line has no equals sign" })),
        new("CRLF line endings", "default", c => Steps(c.R(0) with { Crlf = true }, c.R(301) with { Crlf = true })),

        // -- deliberate differences, asserted explicitly
        new("DIFFERENCE --delay=0 means zero", "diff-delay-zero", c => Steps(c.R(0), c.R(1)))
        {
            Deliberate = (ours, theirs) =>
            {
                Assert.StartsWith("PREPEND X-Greylist: delayed 0 seconds", ours[0], StringComparison.Ordinal);
                Assert.StartsWith("DEFER_IF_PERMIT", theirs[0], StringComparison.Ordinal); // postgrey: 0 is 300
            },
        },
        new("DIFFERENCE IPv4-mapped IPv6 is the IPv4 client", "diff", c => Steps(c.R(0, client: $"10.{c.Number}.0.1"), c.R(301, client: $"::ffff:10.{c.Number}.0.1")))
        {
            Deliberate = (ours, theirs) =>
            {
                Assert.Equal(ours[0], theirs[0]);
                Assert.StartsWith("PREPEND", ours[1], StringComparison.Ordinal);
                Assert.StartsWith("DEFER_IF_PERMIT", theirs[1], StringComparison.Ordinal);
            },
        },
        new("DIFFERENCE a.b in the client whitelist is a /16", "diff", c => Steps(c.R(0, client: "10.250.7.1")))
        {
            Deliberate = (ours, theirs) =>
            {
                Assert.Equal("DUNNO", ours[0]);
                Assert.StartsWith("DEFER_IF_PERMIT", theirs[0], StringComparison.Ordinal); // postgrey: 10.250.0.0/24
            },
        },
        new("DIFFERENCE another request type gets DUNNO", "diff", c => Steps(c.R(0) with { Request = "junk" }))
        {
            Deliberate = (ours, theirs) =>
            {
                Assert.Equal("DUNNO", ours[0]);
                Assert.Equal(NoAnswer, theirs[0]);
            },
        },
        new("DIFFERENCE empty client_address gets DUNNO", "diff-crash", c => Steps(c.R(0, client: "")))
        {
            Deliberate = (ours, theirs) =>
            {
                Assert.Equal("DUNNO", ours[0]);
                Assert.Contains(theirs[0], new[] { NoAnswer, Closed }); // postgrey 1.37 dies here
            },
        },
    ];

    public const string NoAnswer = "<no answer>";
    public const string Closed = "<closed>";

    // N triplets, each passed an hour after the previous one, then a new triplet.
    private static Func<ScenarioContext, Step[]> AutoWhitelist(int n) => c =>
    {
        var steps = new List<Step>();
        for (int i = 0; i < n; i++)
        {
            long t = i * 3700L;
            steps.Add(c.R(t, recipient: $"awl{i}@r.example"));
            steps.Add(c.R(t + 301, recipient: $"awl{i}@r.example"));
        }
        steps.Add(c.R(n * 3700L, recipient: "new@r.example"));
        steps.Add(c.R((n * 3700L) + 10, recipient: "new2@r.example"));
        return [.. steps];
    };
}
