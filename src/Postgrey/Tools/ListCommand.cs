using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey list</c>: the triplets or the auto-whitelisted clients of our database, filtered,
/// as text or JSON: postgrey_clients_dump's job, without its hard-coded count. Read-only, in one
/// snapshot, beside the running service; from the SQLite store (--dbdir) or the shared
/// PostgreSQL store (--db), with the same output for the same rows.
/// </summary>
internal static class ListCommand
{
    private const string Name = "list";

    public static Command Create()
    {
        var what = new Argument<string>("what")
        {
            Description = "triplets (the greylist) or clients (the auto-whitelist)",
            Arity = ArgumentArity.ZeroOrOne,
            DefaultValueFactory = _ => "triplets",
        };
        what.AcceptOnlyFromAmong("triplets", "clients");
        var dbdir = new Option<string>("--dbdir")
        {
            Description = "our database directory, the service's --dbdir (SQLite)",
            HelpName = "DIR",
            DefaultValueFactory = _ => PostgreyCommandLine.DefaultDbDir,
        };
        var db = DatabaseFlags.Uri("--db", "the service's shared PostgreSQL store instead, postgresql://USER@HOST:PORT/DBNAME");
        var password = DatabaseFlags.PasswordFile();
        var client = new Option<string?>("--client")
        {
            Description = "an address (matching the subnet key holding it, as --ipv4cidr/--ipv6cidr or --lookup-by-host make it), a network ADDR/BITS, or a pattern with * on the key's client part",
            HelpName = "ADDR|NET|PATTERN",
        };
        var sender = new Option<string?>("--sender")
        {
            Description = "the sender (normalized as the key stores it: +ext, BATV and VERP numbers removed), or a pattern with *",
            HelpName = "ADDR|PATTERN",
        };
        var recipient = new Option<string?>("--recipient")
        {
            Description = "the recipient, or a pattern with *",
            HelpName = "ADDR|PATTERN",
        };
        var minCount = new Option<int>("--min-count")
        {
            Description = "clients: only those with at least N passed triplets (the service whitelists at --auto-whitelist-clients, 5 by default)",
            HelpName = "N",
        };
        var cidr = new PostgreyCommandLine(); // the service's own subnet widths, for --client=ADDR
        var json = new Option<bool>("--json") { Description = "one JSON array of objects, times in unix seconds" };
        var command = new Command(Name, "List our triplets or auto-whitelisted clients, with filters; read-only, safe while the service runs")
        {
            what, dbdir, db, password, client, sender, recipient, minCount, cidr.IPv4Cidr, cidr.IPv6Cidr, json,
        };
        command.Validators.Add(result => DatabaseFlags.CheckDbOrDbdir(result, dbdir, db, password));
        command.SetAction(r =>
        {
            bool clients = r.GetValue(what) == "clients";
            if (clients && (r.GetValue(sender) is not null || r.GetValue(recipient) is not null))
            {
                return ToolCommand.UsageError(Name, "--sender and --recipient filter triplets; clients have neither");
            }
            if (!clients && r.GetResult(minCount) is { Implicit: false })
            {
                return ToolCommand.UsageError(Name, "--min-count applies to clients");
            }
            var filter = new Filter(r.GetValue(client), r.GetValue(sender), r.GetValue(recipient), r.GetValue(cidr.IPv4Cidr), r.GetValue(cidr.IPv6Cidr));
            return Run(r.GetValue(dbdir)!, r.GetValue(db) is { } uri ? DatabaseFlags.Resolve(uri, r.GetValue(password)) : null, clients, filter, r.GetValue(minCount), r.GetValue(json));
        });
        return command;
    }

    private static int Run(string dbdir, (string ConnectionString, string Description)? db, bool clients, Filter filter, int minCount, bool json)
    {
        try
        {
            using ToolDatabase snapshot = ToolDatabase.Open(dbdir, db);
            using Stream stdout = Console.OpenStandardOutput();
            if (json)
            {
                using var writer = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true });
                writer.WriteStartArray();
                if (clients)
                {
                    foreach (ClientRow row in snapshot.Clients().Where(c => c.Count >= minCount && filter.MatchesClient(c.Key)))
                    {
                        writer.WriteStartObject();
                        writer.WriteString("key", row.Key);
                        writer.WriteNumber("count", row.Count);
                        writer.WriteNumber("last_seen", row.LastSeen);
                        writer.WriteEndObject();
                        FlushEvery64K(writer);
                    }
                }
                else
                {
                    foreach (TripletRow row in snapshot.Triplets())
                    {
                        var parts = KeyParts.Of(row.Key);
                        if (!filter.Matches(parts))
                        {
                            continue;
                        }
                        writer.WriteStartObject();
                        writer.WriteString("key", row.Key);
                        writer.WriteString("client", parts?.Client);
                        writer.WriteString("sender", parts?.Sender);
                        writer.WriteString("recipient", parts?.Recipient);
                        writer.WriteNumber("first_seen", row.FirstSeen);
                        writer.WriteNumber("last_seen", row.LastSeen);
                        writer.WriteEndObject();
                        FlushEvery64K(writer);
                    }
                }
                writer.WriteEndArray();
                writer.Flush();
                stdout.WriteByte((byte)'\n');
                return 0;
            }

            using var text = new StreamWriter(stdout) { NewLine = "\n" };
            if (clients)
            {
                text.WriteLine("count  last_seen             client");
                foreach (ClientRow row in snapshot.Clients().Where(c => c.Count >= minCount && filter.MatchesClient(c.Key)))
                {
                    text.WriteLine($"{row.Count,5}  {Time(row.LastSeen)}  {row.Key}");
                }
            }
            else
            {
                text.WriteLine("first_seen            last_seen             key");
                foreach (TripletRow row in snapshot.Triplets().Where(t => filter.Matches(KeyParts.Of(t.Key))))
                {
                    text.WriteLine($"{Time(row.FirstSeen)}  {Time(row.LastSeen)}  {row.Key}");
                }
            }
            return 0;
        }
        catch (Exception ex) when (ToolDatabase.IsReadError(ex))
        {
            return ToolCommand.Fail(Name, ToolDatabase.ReadFailure(dbdir, db, ex));
        }
    }

    /// <summary>The writer keeps everything until flushed: a million triplets held half a gigabyte.</summary>
    private static void FlushEvery64K(Utf8JsonWriter writer)
    {
        if (writer.BytesPending > 1 << 16)
        {
            writer.Flush();
        }
    }

    /// <summary>Unix seconds as UTC ISO 8601, as the admin reads them beside the log.</summary>
    internal static string Time(long seconds) =>
        DateTimeOffset.FromUnixTimeSeconds(seconds).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>A triplet key's parts: <c>CLIENT/SENDER/RECIPIENT</c>, the client with its
    /// <c>/BITS</c> under --lookup-by-host. Null for a --privacy key (a SHA-1 hex digest).</summary>
    internal sealed record KeyParts(string Client, string Sender, string Recipient)
    {
        public static KeyParts? Of(string key)
        {
            int first = key.IndexOf('/', StringComparison.Ordinal);
            int last = key.LastIndexOf('/');
            if (first < 0 || first == last)
            {
                return null;
            }
            int second = key.IndexOf('/', first + 1);
            if (second < last && second > first + 1 && key.AsSpan(first + 1, second - first - 1).ContainsAnyExceptInRange('0', '9') == false)
            {
                first = second; // ADDR/BITS/...: --lookup-by-host
            }
            return new KeyParts(key[..first], key[(first + 1)..last], key[(last + 1)..]);
        }
    }

    private sealed class Filter
    {
        private readonly Func<string, bool>? _client;
        private readonly Func<string, bool>? _clientKey;
        private readonly Func<string, bool>? _sender;
        private readonly Func<string, bool>? _recipient;

        public Filter(string? client, string? sender, string? recipient, int ipv4Cidr, int ipv6Cidr)
        {
            if (client is not null)
            {
                if (ClientAddress.TryParse(client, out IPAddress address))
                {
                    string byHost = TripletKey.ClientPart(address, new GreylistOptions { LookupByHost = true });
                    string bySubnet = TripletKey.ClientPart(address, new GreylistOptions { IPv4Cidr = ipv4Cidr, IPv6Cidr = ipv6Cidr });
                    string exact = ClientAddress.Format(address);
                    // Triplet keys are lower-cased, auto-whitelist keys not (IPv6 in upper case).
                    _client = part => string.Equals(part, byHost, StringComparison.OrdinalIgnoreCase) || string.Equals(part, bySubnet, StringComparison.OrdinalIgnoreCase);
                    _clientKey = key => string.Equals(key, exact, StringComparison.OrdinalIgnoreCase);
                }
                else if (IPNetwork.TryParse(client, out IPNetwork network))
                {
                    _client = part => InNetwork(part, network);
                    _clientKey = _client;
                }
                else
                {
                    _client = Pattern(client);
                    _clientKey = _client;
                }
            }
            if (sender is not null)
            {
                _sender = sender.Contains('*', StringComparison.Ordinal) ? Pattern(sender) : Pattern(TripletKey.AsciiLower(TripletKey.NormalizeSender(sender)));
            }
            if (recipient is not null)
            {
                _recipient = Pattern(recipient);
            }
        }

        public bool Matches(KeyParts? parts)
        {
            if (_client is null && _sender is null && _recipient is null)
            {
                return true;
            }
            return parts is not null
                && (_client?.Invoke(parts.Client) ?? true)
                && (_sender?.Invoke(parts.Sender) ?? true)
                && (_recipient?.Invoke(parts.Recipient) ?? true);
        }

        public bool MatchesClient(string key) => _clientKey?.Invoke(key) ?? true;

        private static bool InNetwork(string part, IPNetwork network)
        {
            int slash = part.IndexOf('/', StringComparison.Ordinal);
            return IPAddress.TryParse(slash < 0 ? part : part[..slash], out IPAddress? address) && network.Contains(address);
        }

        /// <summary>Case-insensitive, whole text; '*' is any run of characters.</summary>
        private static Func<string, bool> Pattern(string pattern)
        {
            var regex = new Regex("^" + string.Join(".*", pattern.Split('*').Select(Regex.Escape)) + "$",
                RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.NonBacktracking);
            return regex.IsMatch;
        }
    }
}
