using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.Json;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey stats</c>: what greylisting did, read from the database in one snapshot (safe beside
/// the running service: a SQLite WAL reader never blocks its writer, a PostgreSQL READ ONLY
/// transaction blocks no service's writes). Over the triplets first seen within --since:
/// how many passed, still wait, or were never retried within the retry window; how long senders
/// took to retry; the sender domains and client networks most often greylisted without a retry.
/// The database keeps only the first and last time of a triplet, so the retry delay of a
/// triplet is last minus first for those that passed within the retry window: exact for a sender
/// that came back once, longer for one seen again since (the metric postgrey_retry_delay_seconds
/// is exact).
/// </summary>
internal static class StatsCommand
{
    public static Command Create()
    {
        var dbdir = new Option<string>("--dbdir")
        {
            Description = "the database directory, the service's --dbdir (SQLite)",
            HelpName = "DIR",
            DefaultValueFactory = _ => ImportCommand.DefaultDirectory,
        };
        var db = DatabaseFlags.Uri("--db", "the service's shared PostgreSQL store instead, postgresql://USER@HOST:PORT/DBNAME");
        var password = DatabaseFlags.PasswordFile();
        var since = new Option<string>("--since")
        {
            Description = "the triplets first seen within this time: N followed by d, h, m or s",
            HelpName = "AGE",
            DefaultValueFactory = _ => "7d",
            CustomParser = r => Checked(r, static t => Seconds(t, "--since", allowZero: false)),
        };
        var delay = new Option<string>("--delay")
        {
            Description = "the service's --delay, in seconds",
            HelpName = "N",
            DefaultValueFactory = _ => "300",
            CustomParser = r => Checked(r, static t => Seconds(t, "--delay", allowZero: true)),
        };
        var retryWindow = new Option<string>("--retry-window")
        {
            Description = "the service's --retry-window: N days, or Nh hours",
            HelpName = "N",
            DefaultValueFactory = _ => "2",
            CustomParser = r => Checked(r, RetryWindow),
        };
        var awl = new Option<int>("--auto-whitelist-clients")
        {
            Description = "the service's --auto-whitelist-clients",
            HelpName = "N",
            DefaultValueFactory = _ => 5,
        };
        var top = new Option<int>("--top")
        {
            Description = "how many sender domains and client networks to list",
            HelpName = "N",
            DefaultValueFactory = _ => 10,
        };
        var json = new Option<bool>("--json") { Description = "one JSON object instead of text" };
        var command = new Command("stats", "What greylisting did, from the database: triplets passed, waiting and never retried, retry delays, auto-whitelisted clients, who was greylisted without retrying")
        {
            dbdir, db, password, since, delay, retryWindow, awl, top, json,
        };
        command.Validators.Add(result => DatabaseFlags.CheckDbOrDbdir(result, dbdir, db, password));
        command.SetAction(r => Run(
            r.GetValue(db) is { } uri ? DatabaseFlags.Resolve(uri, r.GetValue(password)) : null,
            new StatsSettings(r.GetValue(dbdir)!, Value(r.GetValue(since)!, t => Seconds(t, "--since", false)), Value(r.GetValue(delay)!, t => Seconds(t, "--delay", true)),
                Value(r.GetValue(retryWindow)!, RetryWindow), r.GetValue(awl), r.GetValue(top)),
            r.GetValue(json),
            DateTimeOffset.UtcNow.ToUnixTimeSeconds()));
        return command;
    }

    /// <summary>Checks the text at parse time (so that a bad value is a usage error, exit 2) and keeps it.</summary>
    private static string Checked(ArgumentResult result, Func<string, (long? Value, string Error)> parse)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (parse(text).Value is null)
        {
            result.AddError(parse(text).Error);
        }
        return text;
    }

    private static long Value(string text, Func<string, (long? Value, string Error)> parse) => parse(text).Value!.Value;

    /// <summary>N with an optional unit d, h, m, s (plain: seconds, or days for --since, as --max-age).</summary>
    private static (long? Value, string Error) Seconds(string text, string name, bool allowZero)
    {
        long unit = name == "--since" ? 86400 : 1;
        string number = text;
        if (text.Length > 0 && "dhms".Contains(text[^1], StringComparison.Ordinal))
        {
            unit = text[^1] switch { 'd' => 86400, 'h' => 3600, 'm' => 60, _ => 1 };
            number = text[..^1];
        }
        if (!long.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > 100_000L * 86400 / unit || (n == 0 && !allowZero))
        {
            return (null, $"{name}={text}: a {(allowZero ? "" : "positive ")}whole number with an optional unit d, h, m or s is expected");
        }
        return (n * unit, "");
    }

    private static (long? Value, string Error) RetryWindow(string text)
    {
        bool hours = text.EndsWith('h');
        if (!long.TryParse(hours ? text[..^1] : text, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n is 0 or > 100_000)
        {
            return (null, $"--retry-window={text}: N days or Nh hours is expected");
        }
        return (n * (hours ? 3600 : 86400), "");
    }

    private static int Run((string ConnectionString, string Description)? db, StatsSettings settings, bool json, long now)
    {
        GreylistStats stats;
        try
        {
            // Triplets and clients from one snapshot: the figures agree with each other. In any
            // order: the figures and the top lists (by count, then key) do not depend on it.
            using ToolDatabase database = ToolDatabase.Open(settings.DbDir, db);
            stats = GreylistStats.Compute(database.Triplets(inKeyOrder: false), database.Clients(inKeyOrder: false), settings, now);
        }
        catch (Exception ex) when (ToolDatabase.IsReadError(ex))
        {
            return ToolCommand.Fail("stats", ToolDatabase.ReadFailure(settings.DbDir, db, ex));
        }
        using var output = new StreamWriter(Console.OpenStandardOutput()) { NewLine = "\n" };
        if (json)
        {
            stats.WriteJson(output);
        }
        else
        {
            stats.WriteText(output);
        }
        return 0;
    }
}

internal sealed record StatsSettings(string DbDir, long SinceSeconds, long DelaySeconds, long RetryWindowSeconds, int AutoWhitelistClients, int Top);

/// <summary>The figures of <c>postgrey stats</c>, computed from the rows.</summary>
internal sealed record GreylistStats
{
    public required StatsSettings Settings { get; init; }
    public required long Now { get; init; }
    public long Triplets { get; init; }
    public long Passed { get; init; }
    public long Waiting { get; init; }
    public long NeverRetried { get; init; }
    public long? RetryMedianSeconds { get; init; }
    public long? RetryP90Seconds { get; init; }
    public long RetryDelaysMeasured { get; init; }
    public long Clients { get; init; }
    public long AutoWhitelistedClients { get; init; }
    public IReadOnlyList<KeyValuePair<string, long>> TopSenderDomains { get; init; } = [];
    public IReadOnlyList<KeyValuePair<string, long>> TopClientNetworks { get; init; } = [];

    public static GreylistStats Compute(IEnumerable<TripletRow> triplets, IEnumerable<ClientRow> clients, StatsSettings settings, long now)
    {
        long from = now - settings.SinceSeconds;
        long total = 0, passed = 0, waiting = 0, never = 0;
        var delays = new List<long>();
        var domains = new Dictionary<string, long>(StringComparer.Ordinal);
        var networks = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (TripletRow t in triplets)
        {
            if (t.FirstSeen < from)
            {
                continue;
            }
            total++;
            long waited = t.LastSeen - t.FirstSeen;
            if (waited >= settings.DelaySeconds)
            {
                passed++;
                if (waited <= settings.RetryWindowSeconds)
                {
                    delays.Add(waited);
                }
            }
            else if (now - t.FirstSeen <= settings.RetryWindowSeconds)
            {
                waiting++;
            }
            else
            {
                never++;
                if (SplitKey(t.Key) is { } parts)
                {
                    Count(domains, parts.SenderDomain);
                    Count(networks, parts.Client);
                }
            }
        }
        delays.Sort();
        long clientCount = 0, whitelisted = 0;
        foreach (ClientRow c in clients)
        {
            clientCount++;
            if (settings.AutoWhitelistClients > 0 && c.Count >= settings.AutoWhitelistClients)
            {
                whitelisted++;
            }
        }
        return new GreylistStats
        {
            Settings = settings,
            Now = now,
            Triplets = total,
            Passed = passed,
            Waiting = waiting,
            NeverRetried = never,
            RetryMedianSeconds = Percentile(delays, 0.5),
            RetryP90Seconds = Percentile(delays, 0.9),
            RetryDelaysMeasured = delays.Count,
            Clients = clientCount,
            AutoWhitelistedClients = whitelisted,
            TopSenderDomains = Top(domains, settings.Top),
            TopClientNetworks = Top(networks, settings.Top),
        };

        static void Count(Dictionary<string, long> counts, string key) =>
            counts[key] = counts.GetValueOrDefault(key) + 1;
    }

    /// <summary>Nearest rank: the smallest value with at least <paramref name="p"/> of them at or below it.</summary>
    internal static long? Percentile(List<long> sorted, double p) =>
        sorted.Count == 0 ? null : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Count) - 1, 0, sorted.Count - 1)];

    private static KeyValuePair<string, long>[] Top(Dictionary<string, long> counts, int n) =>
        [.. counts.OrderByDescending(c => c.Value).ThenBy(c => c.Key, StringComparer.Ordinal).Take(Math.Max(n, 0))];

    /// <summary>postgrey's key, <c>CLIENT/SENDER/RECIPIENT</c>, where CLIENT is a network
    /// (<c>192.0.2</c>, <c>2001:db8::</c>) or with --lookup-by-host an address and its prefix
    /// length (<c>192.0.2.1/32</c>); null for a --privacy hash.</summary>
    internal static (string Client, string SenderDomain)? SplitKey(string key)
    {
        string[] parts = key.Split('/');
        if (parts.Length < 3)
        {
            return null;
        }
        int sender = 1;
        if (parts.Length >= 4 && parts[1].Length is > 0 and <= 3 && parts[1].All(char.IsAsciiDigit))
        {
            sender = 2;
        }
        string client = string.Join('/', parts[..sender]);
        // The sender runs to the last '/', the recipient after it (a recipient has no '/').
        string senderText = string.Join('/', parts[sender..^1]);
        int at = senderText.LastIndexOf('@');
        string domain = senderText.Length == 0 ? "<>" : at < 0 ? senderText : senderText[(at + 1)..];
        return (client, domain);
    }

    public void WriteText(TextWriter output)
    {
        string since = DateTimeOffset.FromUnixTimeSeconds(Now - Settings.SinceSeconds).ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);
        output.WriteLine(Invariant($"triplets first seen since {since}: {Triplets}"));
        output.WriteLine(Invariant($"  passed:        {Passed}"));
        output.WriteLine(Invariant($"  waiting:       {Waiting} (greylisted, still within the retry window)"));
        output.WriteLine(Invariant($"  never retried: {NeverRetried} (greylisted, no retry within the retry window)"));
        output.WriteLine(RetryMedianSeconds is { } median
            ? Invariant($"retry delay: median {median} s, p90 {RetryP90Seconds} s ({RetryDelaysMeasured} triplets)")
            : "retry delay: no triplet passed");
        output.WriteLine(Settings.AutoWhitelistClients > 0
            ? Invariant($"auto-whitelisted clients: {AutoWhitelistedClients} (of {Clients} counted)")
            : Invariant($"auto-whitelisted clients: off (--auto-whitelist-clients=0); {Clients} counted"));
        WriteTop(output, "sender domains greylisted without retry:", TopSenderDomains);
        WriteTop(output, "client networks greylisted without retry:", TopClientNetworks);
    }

    private static void WriteTop(TextWriter output, string title, IReadOnlyList<KeyValuePair<string, long>> top)
    {
        output.WriteLine(title);
        foreach (KeyValuePair<string, long> entry in top)
        {
            output.WriteLine(Invariant($"  {entry.Value,8}  {entry.Key}"));
        }
    }

    public void WriteJson(Stream stream)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteNumber("since", Now - Settings.SinceSeconds);
        json.WriteNumber("now", Now);
        json.WriteNumber("triplets", Triplets);
        json.WriteNumber("passed", Passed);
        json.WriteNumber("waiting", Waiting);
        json.WriteNumber("never_retried", NeverRetried);
        json.WriteStartObject("retry_delay_seconds");
        WriteNumberOrNull(json, "median", RetryMedianSeconds);
        WriteNumberOrNull(json, "p90", RetryP90Seconds);
        json.WriteNumber("triplets", RetryDelaysMeasured);
        json.WriteEndObject();
        json.WriteNumber("clients", Clients);
        json.WriteNumber("auto_whitelisted_clients", AutoWhitelistedClients);
        WriteTopJson(json, "top_sender_domains_never_retried", "domain", TopSenderDomains);
        WriteTopJson(json, "top_client_networks_never_retried", "network", TopClientNetworks);
        json.WriteEndObject();
        json.Flush();
        stream.WriteByte((byte)'\n');
    }

    public void WriteJson(StreamWriter output)
    {
        output.Flush();
        WriteJson(output.BaseStream);
    }

    private static void WriteNumberOrNull(Utf8JsonWriter json, string name, long? value)
    {
        if (value is { } v)
        {
            json.WriteNumber(name, v);
        }
        else
        {
            json.WriteNull(name);
        }
    }

    private static void WriteTopJson(Utf8JsonWriter json, string name, string label, IReadOnlyList<KeyValuePair<string, long>> top)
    {
        json.WriteStartArray(name);
        foreach (KeyValuePair<string, long> entry in top)
        {
            json.WriteStartObject();
            json.WriteString(label, entry.Key);
            json.WriteNumber("count", entry.Value);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
