using System.CommandLine;
using System.CommandLine.Help;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Hosting;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey explain</c>: the answer the service, with these flags and this database, would give
/// to one request, and why. The service's own engine decides it, over the service's own whitelist
/// loading and a store that reads the database and writes nothing: the order of the checks
/// cannot drift from the service's. The whitelist entry that matched is then found with its file
/// and line; the keys, the stored records and what the service would write are shown.
/// </summary>
internal static class ExplainCommand
{
    private const string Name = "explain";

    public static Command Create()
    {
        var flags = new PostgreyCommandLine();
        var address = new Option<string>("--client-address") { Description = "the client's IP address, as Postfix's client_address", HelpName = "ADDR", Required = true };
        var name = new Option<string>("--client-name")
        {
            Description = "the client's verified host name, as Postfix's client_name (default: unknown, what Postfix sends without one)",
            HelpName = "NAME",
            DefaultValueFactory = _ => "unknown",
        };
        var sender = new Option<string>("--sender")
        {
            Description = "the envelope sender (default: empty, the null sender <>)",
            HelpName = "ADDR",
            Arity = ArgumentArity.ZeroOrOne,
            DefaultValueFactory = _ => "",
        };
        var recipient = new Option<string>("--recipient") { Description = "the envelope recipient", HelpName = "ADDR", Required = true };
        var time = new Option<long>("--time")
        {
            Description = "ask as at this time: unix seconds or ISO 8601 (UTC unless an offset is given); default: now",
            HelpName = "TIME",
            CustomParser = ParseTime,
        };
        var command = new Command(Name, "Show the answer the service would give to one request with these flags and this database, and why (which whitelist file and line, the key, first and last seen, time left, the auto-whitelist count). Writes nothing. The service's other flags are accepted and ignored, so its command line can be given as is.")
        {
            address, name, sender, recipient, time,
        };
        // The service's own flag definitions, defaults and checks; those that change no decision
        // are accepted (the service's command line can be pasted) but left out of --help.
        Option[] shown =
        [
            flags.DbDir, flags.Db, flags.DbPasswordFile, flags.Delay, flags.RetryWindow, flags.GreylistAction, flags.GreylistText, flags.XGreylistHeader,
            flags.LookupBySubnet, flags.LookupByHost, flags.IPv4Cidr, flags.IPv6Cidr, flags.AutoWhitelistClients,
            flags.WhitelistClients, flags.WhitelistRecipients, flags.Privacy, flags.Hostname,
        ];
        foreach (Option option in flags.Options.Where(o => o is not HelpOption).ToList())
        {
            option.Hidden = !shown.Contains(option);
            command.Options.Add(option);
        }
        command.SetAction((r, ct) =>
        {
            PostgreyOptions options = OptionsMapper.Map(flags, r);
            string clientAddress = r.GetValue(address)!;
            if (!ClientAddress.TryParse(clientAddress, out IPAddress ip))
            {
                return Task.FromResult(ToolCommand.UsageError(Name, $"--client-address={clientAddress}: not an IP address"));
            }
            string from = r.GetValue(sender) ?? "";
            var request = new PolicyRequest
            {
                Request = "smtpd_access_policy",
                ClientAddress = clientAddress,
                ClientName = r.GetValue(name),
                Sender = from == "<>" ? "" : from,
                Recipient = r.GetValue(recipient),
                Instance = "postgrey-explain",
                EtrnDomain = "", // sent by every Postfix since 2.3
            };
            long now = r.GetResult(time) is { Implicit: false } ? r.GetValue(time) : DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            return RunAsync(options, request, ip, now, ct);
        });
        return command;
    }

    private static long ParseTime(System.CommandLine.Parsing.ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long seconds))
        {
            return seconds;
        }
        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out DateTimeOffset when))
        {
            return when.ToUnixTimeSeconds();
        }
        result.AddError($"--time={text}: unix seconds or an ISO 8601 date is expected");
        return 0;
    }

    private static async Task<int> RunAsync(PostgreyOptions options, PolicyRequest request, IPAddress ip, long now, CancellationToken ct)
    {
        GreylistOptions greylist = options.Greylist;
        using var log = new ExplainLog();
        var files = new WhitelistFiles(options.WhitelistClientFiles, options.WhitelistRecipientFiles, log.CreateLogger(typeof(WhitelistFiles).FullName!));
        WhitelistSet whitelists = files.Load(requireAll: false)!;

        ToolDatabase? snapshot = null;
        (string ConnectionString, string Description)? shared = options.PostgreSql is { } pg ? (pg.ConnectionString, pg.Description) : null;
        string database = shared?.Description ?? options.Storage.DatabasePath;
        try
        {
            // A SQLite file the service has not yet created reads as empty; a PostgreSQL database
            // must be there, with its schema (the service would not start without it either).
            snapshot = shared is not null || File.Exists(database) ? ToolDatabase.Open(options.Storage.Directory, shared) : null;
            using var store = new DryRunStore(snapshot);
            var engine = new GreylistEngine(store, new WhitelistProvider(whitelists), greylist, new FixedTime(now), log);
            string answer = await engine.DecideAsync(request, ct);
            if (store.Failure is { } failure)
            {
                throw failure;
            }

            string tripletKey = TripletKey.Build(ip, request.Sender!, request.Recipient!, greylist);
            string? clientKey = greylist.AutoWhitelistClients > 0 ? TripletKey.ClientKey(ip, greylist) : null;
            TripletRecord? triplet = snapshot?.FindTriplet(tripletKey);
            ClientRecord? client = clientKey is null ? null : snapshot?.FindClient(clientKey);

            var lines = new List<string>();
            lines.Add($"answer: {answer}");
            foreach (string line in log.ServiceLines)
            {
                lines.Add($"log: {line}");
            }
            lines.Add($"time: {ListCommand.Time(now)} ({now})");
            lines.Add($"database: {(snapshot is null ? database + " does not exist yet: empty" : database)}");

            string reason = log.Reason ?? "";
            WhitelistEntry? clientMatch = reason == "client whitelist"
                ? WhitelistEntries.FindClient(ReadEntries(files.ClientFiles), request.ClientName!, ip)
                : null;
            lines.Add("client whitelist: " + (clientMatch is not null ? $"matched by {clientMatch}" : $"no match in {string.Join(", ", files.ClientFiles)}"));
            if (clientMatch is null)
            {
                WhitelistEntry? recipientMatch = reason == "recipient whitelist"
                    ? WhitelistEntries.FindRecipient(ReadEntries(files.RecipientFiles), request.Recipient!)
                    : null;
                lines.Add("recipient whitelist: " + (recipientMatch is not null ? $"matched by {recipientMatch}" : $"no match in {string.Join(", ", files.RecipientFiles)}"));
            }
            bool whitelisted = reason is "client whitelist" or "recipient whitelist";

            if (clientKey is null)
            {
                lines.Add("auto-whitelist: off (--auto-whitelist-clients=0)");
            }
            else
            {
                lines.Add($"auto-whitelist key: {clientKey}");
                lines.Add("auto-whitelist: " + (client is { } c
                    ? $"{c.Count} passed triplet(s), {greylist.AutoWhitelistClients} needed{(c.Count >= greylist.AutoWhitelistClients ? ": whitelisted" : "")}; last counted {ListCommand.Time(c.LastSeen)}"
                    : $"not listed: 0 passed triplets, {greylist.AutoWhitelistClients} needed"));
            }

            lines.Add($"triplet key: {tripletKey}");
            lines.Add("triplet: " + (triplet is { } t
                ? $"first seen {ListCommand.Time(t.FirstSeen)}, last seen {ListCommand.Time(t.LastSeen)}{(t.LastSeen - t.FirstSeen >= greylist.DelaySeconds ? " (passed before)" : "")}"
                : "not in the database"));
            if (!whitelisted && reason != "client AWL")
            {
                TripletRecord basis = store.TripletWrite ?? triplet ?? new TripletRecord(now, now);
                long left = greylist.DelaySeconds - (now - basis.FirstSeen);
                if (triplet is { } stored && stored.LastSeen - stored.FirstSeen < greylist.DelaySeconds && now - stored.FirstSeen > greylist.RetryWindowSeconds)
                {
                    lines.Add($"note: the first retry comes after the retry window ({greylist.RetryWindowSeconds} s): the triplet starts over");
                }
                lines.Add(left > 0
                    ? $"time left: {left} s (--delay={greylist.DelaySeconds}; a retry from {ListCommand.Time(basis.FirstSeen + greylist.DelaySeconds)} passes)"
                    : "time left: 0 s (waited long enough: passes)");
            }
            var writes = new List<string>();
            if (store.TripletWrite is { } tw)
            {
                writes.Add($"triplet first_seen={tw.FirstSeen} last_seen={tw.LastSeen}");
            }
            if (store.ClientWrite is { } cw)
            {
                writes.Add($"auto-whitelist count={cw.Count} last_seen={cw.LastSeen}");
            }
            lines.Add("the service would write: " + (writes.Count > 0 ? string.Join("; ", writes) : "nothing") + " (explain writes nothing)");
            await Console.Out.WriteAsync(string.Join('\n', lines) + "\n");
            return 0;
        }
        catch (Exception ex) when (ToolDatabase.IsReadError(ex))
        {
            return ToolCommand.Fail(Name, ToolDatabase.ReadFailure(options.Storage.Directory, shared, ex));
        }
        finally
        {
            snapshot?.Dispose();
        }
    }

    /// <summary>Every entry of the files, read as the service reads them; unreadable files were
    /// already said by the service's own loading.</summary>
    private static List<WhitelistEntry> ReadEntries(IEnumerable<string> files)
    {
        var entries = new List<WhitelistEntry>();
        foreach (string file in files)
        {
            try
            {
                using var reader = new StreamReader(file);
                entries.AddRange(WhitelistEntries.Read(reader, file, []));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // said by WhitelistFiles.Load
            }
        }
        return entries;
    }

    /// <summary>A store over the snapshot that runs the engine's decision on it and keeps the
    /// writes it asks for, instead of making them.</summary>
    private sealed class DryRunStore(ToolDatabase? snapshot) : IGreylistStore, IGreylistTransaction, IDisposable
    {
        public Exception? Failure { get; private set; }

        public TripletRecord? TripletWrite { get; private set; }

        public ClientRecord? ClientWrite { get; private set; }

        public ValueTask<TResult> ExecuteAsync<TState, TResult>(TState state, Func<IGreylistTransaction, TState, TResult> decide, CancellationToken cancellationToken)
        {
            try
            {
                return ValueTask.FromResult(decide(this, state));
            }
            catch (Exception ex) when (ToolDatabase.IsReadError(ex))
            {
                Failure = ex; // the engine would answer DUNNO; explain says why instead
                throw;
            }
        }

        public ValueTask<MaintenanceReport> CleanAsync(MaintenancePolicy policy, CancellationToken cancellationToken) =>
            throw new NotSupportedException("explain does not clean");

        public TripletRecord? FindTriplet(string key) => snapshot?.FindTriplet(key);

        public void SaveTriplet(string key, TripletRecord record) => TripletWrite = record;

        public ClientRecord? FindClient(string key) => snapshot?.FindClient(key);

        public void SaveClient(string key, ClientRecord record) => ClientWrite = record;

        public void Dispose()
        {
        }
    }

    /// <summary>The service's clock, stopped at the time asked about.</summary>
    private sealed class FixedTime(long seconds) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => DateTimeOffset.FromUnixTimeSeconds(seconds);
    }

    /// <summary>
    /// Keeps what the engine would log under postgrey's ident (the decision's action and reason,
    /// "whitelisted: ..."); prints the whitelist loading's warnings (a file that can't be read, a
    /// bad line) on stderr, as the service would log them; drops the rest.
    /// </summary>
    private sealed class ExplainLog : ILoggerFactory
    {
        public List<string> ServiceLines { get; } = [];

        public string? Reason { get; private set; }

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        private sealed class Logger(ExplainLog log, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (category == GreylistEngine.DecisionLogCategory)
                {
                    if (eventId.Name == "Decision" && state is IReadOnlyList<KeyValuePair<string, object?>> fields)
                    {
                        // The service's line without its request fields, which explain shows apart.
                        object? Field(string key) => fields.FirstOrDefault(f => f.Key == key).Value;
                        log.Reason = Field("Reason") as string;
                        string delay = Field("Delay") is { } d ? $", delay={d}" : "";
                        log.ServiceLines.Add($"action={Field("Action")}, reason={log.Reason}{delay}");
                    }
                    else
                    {
                        log.ServiceLines.Add(formatter(state, exception));
                    }
                }
                else if (category == typeof(WhitelistFiles).FullName && logLevel >= LogLevel.Warning)
                {
                    Console.Error.WriteLine($"postgrey {Name}: warning: {formatter(state, exception)}");
                }
            }
        }
    }
}
