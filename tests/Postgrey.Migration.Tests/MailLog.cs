using System.Globalization;
using System.Text;

namespace Postgrey.Migration.Tests;

/// <summary>One SMTP attempt of the trace: the client (name as Postfix logs it), the envelope, the time.</summary>
internal sealed record Attempt(string Address, string Name, string Sender, string Recipient, long Time);

/// <summary>
/// A mail trace run through Debian's postgrey, and the mail log Postfix would have written for
/// it: a "NOQUEUE: reject: ... 450 ... Greylisted" line for each refusal, the smtpd, cleanup,
/// qmgr and delivery lines of a queue id for each mail let through. So the log holds every
/// request postgrey saw, with its time, and postgrey's dbdir is the database that log goes with.
/// </summary>
internal sealed class MailLog
{
    private MailLog(string dbdir, IReadOnlyList<Attempt> attempts, IReadOnlyList<string> answers)
    {
        Dbdir = dbdir;
        Attempts = attempts;
        Answers = answers;
    }

    public string Dbdir { get; }

    public IReadOnlyList<Attempt> Attempts { get; }

    /// <summary>postgrey's answer to each attempt, without "action=".</summary>
    public IReadOnlyList<string> Answers { get; }

    /// <summary>Runs Debian's postgrey (default flags) on <see cref="Trace"/> in <paramref name="dbdir"/>.</summary>
    public static async Task<MailLog> MakeAsync(string dbdir)
    {
        List<Attempt> attempts = Trace();
        List<string> answers = await Fixtures.RunPostgreyAsync(dbdir, [], attempts.Select(a => new Delivery(a.Address, a.Sender, a.Recipient, a.Time)));
        return new MailLog(dbdir, attempts, answers);
    }

    /// <summary>
    /// Hand-picked cases (a retry that passes, refusals that never pass, several triplets of one
    /// client and of one /24, VERP and BATV senders, capitals, an unknown client name, dial-up
    /// pools, IPv6) and a seeded random bulk, in time order.
    /// </summary>
    public static List<Attempt> Trace()
    {
        long t0 = Fixtures.T0;
        var list = new List<Attempt>
        {
            new("192.0.2.10", "mail.example.com", "s1@example.net", "r1@example.org", t0),
            new("192.0.2.10", "mail.example.com", "s1@example.net", "r1@example.org", t0 + 400),
            new("192.0.2.11", "mail2.example.com", "spam@bad.example", "r1@example.org", t0 + 10),
            new("192.0.2.11", "mail2.example.com", "spam@bad.example", "r1@example.org", t0 + 70),
            new("192.0.2.11", "mail2.example.com", "spam@bad.example", "r1@example.org", t0 + 130),
            new("192.0.2.11", "mail2.example.com", "spam2@bad.example", "r2@example.org", t0 + 20),
            new("192.0.2.12", "mx.other.example", "list+bounce-42@lists.example", "R3@Example.ORG", t0 + 30),
            new("192.0.2.12", "mx.other.example", "list+bounce-43@lists.example", "R3@Example.ORG", t0 + 500),
            new("192.0.2.13", "fast.example", "a@b.example", "r@example.org", t0 + 40),
            new("192.0.2.13", "fast.example", "a@b.example", "r@example.org", t0 + 200),
            new("198.51.100.7", "unknown", "x@y.example", "r2@example.org", t0 + 50),
            new("198.51.100.7", "unknown", "x@y.example", "r2@example.org", t0 + 450),
            new("203.0.113.45", "host-113-45.pool.example", "p@q.example", "r@example.org", t0 + 60),
            new("203.0.113.46", "mail.pool2.example", "prvs=1234567890=user@example.com", "r@example.org", t0 + 70),
            new("203.0.113.46", "mail.pool2.example", "prvs=1234567890=user@example.com", "r@example.org", t0 + 500),
            new("2001:db8::5", "v6.example", "a@b.example", "c@example.org", t0 + 80),
            new("192.0.2.14", "boss.example", "Big.Boss@Example.COM", "r@example.org", t0 + 90),
            new("192.0.2.14", "boss.example", "12345@numbers.example", "r@example.org", t0 + 95),
        };
        var random = new Random(14);
        string[] addresses = [.. Enumerable.Range(0, 60).Select(i => $"10.{i % 3}.{i % 5 * 40}.{1 + (i * 37 % 250)}")];
        for (int i = 0; i < 300; i++)
        {
            string address = addresses[random.Next(addresses.Length)];
            string[] octets = address.Split('.');
            // One name an address, as its PTR record gives: postgreyreport's grouping and
            // separators follow the name of whichever triplet of an address its hash yields first.
            string name = (int.Parse(octets[3], CultureInfo.InvariantCulture) % 4) switch
            {
                0 => "unknown",
                1 => $"dyn-{octets[2]}-{octets[3]}.isp.example",
                _ => $"mta{octets[3]}.sender{octets[1]}.example",
            };
            string sender = random.Next(3) switch
            {
                0 => $"bounce-{random.Next(100000)}@lists{i % 4}.example",
                1 => $"{random.Next(1000, 99999)}@num.example",
                _ => $"user{i}@sender{i % 9}.example",
            };
            string recipient = $"rcpt{random.Next(20)}@example.org";
            long first = t0 + 1000 + (i * 7);
            list.Add(new(address, name, sender, recipient, first));
            switch (random.Next(5))
            {
                case 0 or 1:
                    list.Add(new(address, name, sender, recipient, first + random.Next(300, 900)));
                    break;
                case 2:
                    list.Add(new(address, name, sender, recipient, first + random.Next(60, 200)));
                    break;
                default:
                    break; // never again
            }
        }
        return [.. list.OrderBy(a => a.Time)];
    }

    /// <summary>The mail log, with syslog's "Mmm dd hh:mm:ss" stamps in UTC, or RFC 3339 ones
    /// in +01:00 (rsyslog's high-precision format).</summary>
    public string Text(bool rfc3339 = false)
    {
        var log = new StringBuilder();
        for (int i = 0; i < Attempts.Count; i++)
        {
            Attempt a = Attempts[i];
            string stamp = Stamp(a.Time, rfc3339);
            string client = $"{a.Name}[{a.Address}]";
            string answer = Answers[i];
            if (answer.StartsWith("DEFER_IF_PERMIT ", StringComparison.Ordinal))
            {
                string text = answer["DEFER_IF_PERMIT ".Length..];
                log.Append(CultureInfo.InvariantCulture, $"{stamp} mx postfix/smtpd[4242]: NOQUEUE: reject: RCPT from {client}: 450 4.2.0 <{a.Recipient}>: Recipient address rejected: {text}; from=<{a.Sender}> to=<{a.Recipient}> proto=ESMTP helo=<{a.Name}>\n");
            }
            else
            {
                string id = (0xA0000 + i).ToString("X", CultureInfo.InvariantCulture);
                string later = Stamp(a.Time + 1, rfc3339);
                log.Append(CultureInfo.InvariantCulture, $"{stamp} mx postfix/smtpd[4242]: {id}: client={client}\n");
                log.Append(CultureInfo.InvariantCulture, $"{stamp} mx postfix/cleanup[4243]: {id}: message-id=<{i}@example.net>\n");
                log.Append(CultureInfo.InvariantCulture, $"{later} mx postfix/qmgr[4244]: {id}: from=<{a.Sender}>, size=1234, nrcpt=1 (queue active)\n");
                log.Append(CultureInfo.InvariantCulture, $"{later} mx postfix/local[4245]: {id}: to=<{a.Recipient}>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered to mailbox)\n");
                log.Append(CultureInfo.InvariantCulture, $"{later} mx postfix/qmgr[4244]: {id}: removed\n");
            }
        }
        return log.ToString();
    }

    public static string Stamp(long time, bool rfc3339)
    {
        DateTimeOffset utc = DateTimeOffset.FromUnixTimeSeconds(time);
        if (rfc3339)
        {
            return utc.ToOffset(TimeSpan.FromHours(1)).ToString("yyyy-MM-dd'T'HH:mm:ss'.123456'zzz", CultureInfo.InvariantCulture);
        }
        return string.Create(CultureInfo.InvariantCulture, $"{utc:MMM} {utc.Day,2} {utc:HH:mm:ss}");
    }
}
