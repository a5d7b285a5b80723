using System.Globalization;
using System.Text.RegularExpressions;

namespace Postgrey.Tools;

/// <summary>A policy request rebuilt from the log: who, to whom, and when (unix seconds).</summary>
internal sealed record ReplayedRequest(string ClientName, string ClientAddress, string Sender, string Recipient, long Time);

/// <summary>
/// The policy requests a Postfix mail log shows, found as postgrey's contrib policy-test finds
/// them (Debian's /usr/sbin/policy-test): every "NOQUEUE: reject: RCPT from NAME[ADDR]: ...;
/// from=&lt;S&gt; to=&lt;R&gt;" line of postfix/*, and every accepted mail, put together from its
/// queue id's lines: "client=NAME[ADDR]" (whose time is the request's), " from=&lt;S&gt;" and
/// "to=&lt;R&gt;", given when both addresses are known. Time stamps are syslog's "Mmm dd hh:mm:ss"
/// in local time (the year from <c>year</c>, carried over New Year as Parse::Syslog does), or
/// RFC 3339 as rsyslog's high-precision format writes them.
/// </summary>
internal sealed class PostfixLogRequests(int? year, TimeZoneInfo zone, DateTimeOffset now)
{
    // Parse::Syslog's line: date, time, FreeBSD's <facility.level>, host, FreeBSD's [LOG_X].
    private static readonly Regex Traditional = new(
        @"^(\S{3})\s+([0-9]+)\s([0-9]+):([0-9]+):([0-9]+)(?:\s<\w+\.\w+>)?\s([-\w.@:]+)\s+(?:\[LOG_[A-Z]+\]\s+)?(.*)$",
        RegexOptions.CultureInvariant);

    private static readonly Regex Rfc3339 = new(
        @"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2}))\s([-\w.@:]+)\s+(.*)$",
        RegexOptions.CultureInvariant);

    private static readonly Regex Program = new(@"^([^:]+?)(?:\[([0-9]+)\])?:\s+(?:\[ID [0-9]+ [a-z0-9]+\.[a-z]+\] )?(.*)$", RegexOptions.CultureInvariant);

    private static readonly Regex Reject = new(@"^NOQUEUE: reject: RCPT from ([^[]+)\[([^]]*)\]:.*?; (.*)", RegexOptions.CultureInvariant);
    private static readonly Regex FromAnywhere = new(@"\bfrom=<([^>]*)>", RegexOptions.CultureInvariant);
    private static readonly Regex ToAnywhere = new(@"\bto=<([^>]*)>", RegexOptions.CultureInvariant);
    private static readonly Regex QueueLine = new(@"^([0-9A-F]+):(.*)", RegexOptions.CultureInvariant);
    private static readonly Regex Client = new(@" client=([^[]+)\[([^]]+)\]", RegexOptions.CultureInvariant);
    private static readonly Regex From = new(@" from=<([^>]*)>", RegexOptions.CultureInvariant);
    private static readonly Regex To = new(@"to=<([^>]*)>", RegexOptions.CultureInvariant);

    private static readonly string[] Months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

    private sealed class Pending
    {
        public required long Time;
        public required string Name;
        public required string Address;
        public string? Sender;
        public string? Recipient;
    }

    private readonly Dictionary<string, Pending> _queued = new(StringComparer.Ordinal);
    private int _year = year ?? TimeZoneInfo.ConvertTime(now, zone).Year;
    private int? _lastMonth;
    private bool _yearDecrementAllowed;

    /// <summary>Lines that are no syslog line, or a Postfix NOQUEUE line that cannot be read.</summary>
    public long Skipped { get; private set; }

    /// <summary>
    /// The request <paramref name="line"/> completes, if any; <paramref name="problem"/> says why a
    /// line was skipped (and counted in <see cref="Skipped"/>), else null.
    /// </summary>
    public ReplayedRequest? Add(string line, out string? problem)
    {
        problem = null;
        if (!TryTime(line, out long time, out string text))
        {
            problem = "not a syslog line";
            Skipped++;
            return null;
        }
        Match program = Program.Match(text);
        if (!program.Success)
        {
            problem = "not a syslog line";
            Skipped++;
            return null;
        }
        if (!program.Groups[1].Value.StartsWith("postfix/", StringComparison.Ordinal))
        {
            return null;
        }
        string message = program.Groups[3].Value;
        if (message.StartsWith("NOQUEUE", StringComparison.Ordinal))
        {
            Match reject = Reject.Match(message);
            if (!reject.Success)
            {
                problem = "a Postfix NOQUEUE line that is not \"NOQUEUE: reject: RCPT from NAME[ADDRESS]: ...; from=<...> to=<...>\"";
                Skipped++;
                return null;
            }
            string other = reject.Groups[3].Value;
            Match from = FromAnywhere.Match(other), to = ToAnywhere.Match(other);
            return new ReplayedRequest(reject.Groups[1].Value, reject.Groups[2].Value,
                from.Success ? from.Groups[1].Value : "", to.Success ? to.Groups[1].Value : "", time);
        }
        Match queued = QueueLine.Match(message);
        if (!queued.Success)
        {
            return null;
        }
        string id = queued.Groups[1].Value, data = queued.Groups[2].Value;
        Match client = Client.Match(data);
        if (client.Success)
        {
            _queued[id] = new Pending { Time = time, Name = client.Groups[1].Value, Address = client.Groups[2].Value };
        }
        if (!_queued.TryGetValue(id, out Pending? pending))
        {
            return null;
        }
        if (From.Match(data) is { Success: true } sender)
        {
            pending.Sender = sender.Groups[1].Value;
        }
        if (To.Match(data) is { Success: true } recipient)
        {
            pending.Recipient = recipient.Groups[1].Value;
        }
        if (pending.Sender is null || pending.Recipient is null)
        {
            return null;
        }
        _queued.Remove(id);
        return new ReplayedRequest(pending.Name, pending.Address, pending.Sender, pending.Recipient, pending.Time);
    }

    private bool TryTime(string line, out long time, out string text)
    {
        time = 0;
        text = "";
        Match iso = Rfc3339.Match(line);
        if (iso.Success)
        {
            if (!DateTimeOffset.TryParse(iso.Groups[1].Value, CultureInfo.InvariantCulture, DateTimeStyles.None, out DateTimeOffset stamp))
            {
                return false;
            }
            time = stamp.ToUnixTimeSeconds();
            text = StripHost(iso.Groups[3].Value, iso.Groups[2].Value);
            return true;
        }
        Match m = Traditional.Match(line);
        if (!m.Success)
        {
            return false;
        }
        int month = Array.FindIndex(Months, name => name.Equals(m.Groups[1].Value, StringComparison.OrdinalIgnoreCase));
        if (month < 0
            || !int.TryParse(m.Groups[2].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int day)
            || !int.TryParse(m.Groups[3].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int hour)
            || !int.TryParse(m.Groups[4].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int minute)
            || !int.TryParse(m.Groups[5].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int second)
            || day < 1 || hour > 23 || minute > 59 || second > 60)
        {
            return false;
        }
        YearIncrement(month);
        if (day > DateTime.DaysInMonth(_year, month + 1))
        {
            return false;
        }
        time = LocalToUnix(_year, month + 1, day, hour, minute, Math.Min(second, 59));
        if (year is null && time - now.ToUnixTimeSeconds() > 86400)
        {
            // A year-less stamp more than a day ahead: last year's log read this year.
            _year--;
            time = LocalToUnix(_year, month + 1, day, hour, minute, Math.Min(second, 59));
        }
        text = StripHost(m.Groups[7].Value, m.Groups[6].Value);
        return true;
    }

    /// <summary>Parse::Syslog's _year_increment: December then January is a new year; a
    /// December right after the log began in January is the year before.</summary>
    private void YearIncrement(int month)
    {
        if (month == 0)
        {
            if (_lastMonth == 11)
            {
                _year++;
            }
            _yearDecrementAllowed = true;
        }
        else if (month == 11)
        {
            if (_yearDecrementAllowed && _lastMonth is not null && _lastMonth != 11)
            {
                _year--;
            }
        }
        else
        {
            _yearDecrementAllowed = false;
        }
        _lastMonth = month;
    }

    private long LocalToUnix(int y, int month, int day, int hour, int minute, int second)
    {
        var local = new DateTime(y, month, day, hour, minute, second, DateTimeKind.Unspecified);
        if (zone.IsInvalidTime(local))
        {
            local = local.AddHours(1); // in the hour a DST switch skips
        }
        return new DateTimeOffset(TimeZoneInfo.ConvertTimeToUtc(local, zone)).ToUnixTimeSeconds();
    }

    /// <summary>Parse::Syslog drops a repeated host name and a leading ": " from the text.</summary>
    private static string StripHost(string text, string host)
    {
        if (text.StartsWith(host, StringComparison.Ordinal) && text.Length > host.Length && char.IsWhiteSpace(text[host.Length]))
        {
            text = text[host.Length..].TrimStart();
        }
        if (text.StartsWith(':'))
        {
            text = text[1..].TrimStart();
        }
        return text;
    }
}
