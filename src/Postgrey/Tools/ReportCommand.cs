using System.CommandLine;
using System.Data.Common;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Npgsql;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey report</c>: postgreyreport's job (Debian's /usr/bin/postgreyreport) on our
/// database: reads a mail log and prints the greylisted triplets that never came back, with
/// its options and its output, byte for byte. Reads only; safe beside the running service.
/// Left out: --check_sender and --skip_dnsbl (DNS look-ups per line), --user (nothing to drop:
/// it reads our database as whoever runs it) and the --debug_* switches.
/// </summary>
internal static class ReportCommand
{
    private sealed record Settings(
        long Delay, Regex GreylistText, bool ShowTries, bool ShowTime, bool Tab, bool SingleLine,
        string SeparateBySubnet, string SeparateByIp, bool SkipPool);

    public static Command Create()
    {
        var dbdir = new Option<string>("--dbdir")
        {
            Description = "our database directory, the service's --dbdir",
            HelpName = "DIR",
            DefaultValueFactory = _ => ImportCommand.DefaultDirectory,
        };
        var db = new Option<string?>("--db")
        {
            Description = "the service's shared PostgreSQL store, postgresql://USER@HOST:PORT/DBNAME, instead of --dbdir",
            HelpName = "URI",
        };
        var delay = new Option<long>("--delay")
        {
            Description = "report triplets that did not try again after N seconds",
            HelpName = "N",
            DefaultValueFactory = _ => 300,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (!long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long seconds))
                {
                    r.AddError($"--delay: '{text}' is not a whole number of seconds");
                }
                return seconds;
            },
        };
        var greylistText = new Option<string>("--greylist-text", "--return_string")
        {
            Description = "regular expression of the log's greylist refusals",
            HelpName = "TXT",
            DefaultValueFactory = _ => "Greylisted",
        };
        var skipPool = new Option<bool>("--skip_pool", "--skip-pool") { Description = "skip 'subscriber pools' (the last two octets of the address in the client name)" };
        var skipClients = new Option<string[]>("--skip_clients", "--skip-clients")
        {
            Description = "file of client names, addresses or /REGEX/ not to report; may be repeated",
            HelpName = "FILE",
            AllowMultipleArgumentsPerToken = false,
        };
        var matchClients = new Option<string[]>("--match_clients", "--match-clients")
        {
            Description = "file of client names, addresses or /REGEX/: report only these; may be repeated",
            HelpName = "FILE",
            AllowMultipleArgumentsPerToken = false,
        };
        var showTries = new Option<bool>("--show_tries", "--show-tries") { Description = "show how often each triplet was refused, first" };
        var showTime = new Option<bool>("--show_time", "--show-time") { Description = "show the log time of its last refusal (single line only)" };
        var tab = new Option<bool>("--tab") { Description = "separate the fields by tabs, for cut(1) (single line only)" };
        var noSingleLine = new Option<bool>("--nosingle_line", "--no-single-line") { Description = "group senders and recipients under each client name and address" };
        var bySubnet = new Option<string>("--separate_by_subnet", "--separate-by-subnet")
        {
            Description = "print TXT before each new /24 (\\n in TXT is a newline)",
            HelpName = "TXT",
            DefaultValueFactory = _ => "",
        };
        var byIp = new Option<string>("--separate_by_ip", "--separate-by-ip")
        {
            Description = "print TXT before each new client address (\\n in TXT is a newline)",
            HelpName = "TXT",
            DefaultValueFactory = _ => "",
        };
        var files = new Argument<string[]>("LOG")
        {
            Description = "mail logs to read (default: standard input)",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var command = new Command("report", "postgreyreport on our database: print the triplets of the mail log that were greylisted and never came back, sorted by client address. zcat /var/log/mail.log.1.gz | postgrey report")
        {
            dbdir, db, delay, greylistText, skipPool, skipClients, matchClients, showTries, showTime, tab, noSingleLine, bySubnet, byIp, files,
        };
        command.Validators.Add(r =>
        {
            // An unknown --option would otherwise be taken for a log file's name.
            if (r.GetResult(files)?.Tokens.FirstOrDefault(t => t.Value.Length > 1 && t.Value[0] == '-') is { } unknown)
            {
                r.AddError($"unknown option {unknown.Value.Split('=')[0]}");
            }
            if (r.GetResult(db) is not null && r.GetResult(dbdir) is { Implicit: false })
            {
                r.AddError("--db and --dbdir name two databases; give one");
            }
            try
            {
                // Unset, the validator sees null rather than the default.
                _ = new Regex(r.GetValue(greylistText) ?? "Greylisted", RegexOptions.CultureInvariant);
            }
            catch (ArgumentException ex)
            {
                r.AddError($"--greylist-text is not a regular expression: {ex.Message}");
            }
        });
        command.SetAction(r =>
        {
            var settings = new Settings(
                r.GetValue(delay), new Regex(r.GetValue(greylistText) ?? "Greylisted", RegexOptions.CultureInvariant),
                r.GetValue(showTries), r.GetValue(showTime), r.GetValue(tab), !r.GetValue(noSingleLine),
                Unescape(r.GetValue(bySubnet)!), Unescape(r.GetValue(byIp)!), r.GetValue(skipPool));
            return Run(settings, r.GetValue(dbdir)!, r.GetValue(db), r.GetValue(skipClients) ?? [], r.GetValue(matchClients) ?? [], r.GetValue(files) ?? []);
        });
        return command;
    }

    private static int Run(Settings settings, string dbdir, string? uri, string[] skipFiles, string[] matchFiles, string[] logs)
    {
        ClientPatterns skip, match;
        try
        {
            skip = ClientPatterns.Read(skipFiles, Console.Error);
            match = ClientPatterns.Read(matchFiles, Console.Error);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return ToolCommand.Fail("report", ex.Message);
        }

        string database;
        DbConnection connection;
        try
        {
            (database, connection) = uri is null ? OpenSqlite(dbdir) : OpenPostgreSql(uri);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"postgrey report: --db: {ex.Message} (see postgrey report --help)");
            return ToolCommand.Usage;
        }
        catch (Exception ex) when (ex is DbException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return ToolCommand.Fail("report", ex.Message);
        }

        using (connection)
        using (System.Data.Common.DbCommand find = Lookup(connection, uri is null ? "$k" : "$1"))
        {
            var triplets = new GreylistedTriplets(settings.GreylistText, matchFiles.Length > 0 ? match : null, skip, settings.SkipPool, settings.Delay, key =>
            {
                find.Parameters[0].Value = key;
                using DbDataReader reader = find.ExecuteReader();
                return reader.Read() ? (reader.GetInt64(0), reader.GetInt64(1)) : null;
            });
            string current = "standard input";
            try
            {
                foreach (string log in logs.Length == 0 ? ["-"] : logs)
                {
                    current = log == "-" ? "standard input" : log;
                    using Stream input = log == "-" ? Console.OpenStandardInput() : File.OpenRead(log);
                    foreach (string line in LogLines.Read(input))
                    {
                        triplets.Add(line);
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                return ToolCommand.Fail("report", $"can't read {current}: {ex.Message}");
            }
            catch (DbException ex)
            {
                return ToolCommand.Fail("report", $"can't read {database}: {ex.Message}");
            }
            catch (RegexMatchTimeoutException ex)
            {
                return ToolCommand.Fail("report", $"the client list's /{ex.Pattern}/ took over a second on one line of {current}");
            }

            try
            {
                using var output = new StreamWriter(Console.OpenStandardOutput(), Encoding.Latin1, 1 << 16) { NewLine = "\n" };
                Write(output, settings, triplets.Sorted());
            }
            catch (IOException ex)
            {
                return ToolCommand.Fail("report", $"can't write standard output: {ex.Message}");
            }
        }
        return 0;
    }

    /// <summary>The report, as postgrey_fatal_report prints it (printf widths and all).</summary>
    private static void Write(TextWriter output, Settings s, IReadOnlyList<FatalTriplet> triplets)
    {
        string? lastIp = null, lastSubnet = null;
        foreach (FatalTriplet triplet in triplets)
        {
            // split(/\//, $key): a sender holding '/' shifts the fields, as there.
            string[] fields = triplet.Key.Split('/');
            string ip = fields[0], sender = fields.Length > 1 ? fields[1] : "", recipient = fields.Length > 2 ? fields[2] : "";

            if (lastSubnet == triplet.Subnet)
            {
                if (lastIp != ip && IsTrue(s.SeparateByIp))
                {
                    output.Write(s.SeparateByIp);
                }
            }
            else if (IsTrue(s.SeparateBySubnet))
            {
                output.Write(s.SeparateBySubnet);
            }
            else if (IsTrue(s.SeparateByIp))
            {
                output.Write(s.SeparateByIp);
            }

            if (s.SingleLine)
            {
                string separator = s.Tab ? "\t" : " ";
                if (s.ShowTime)
                {
                    output.Write(triplet.EntryTime + separator);
                }
                if (s.ShowTries)
                {
                    output.Write(triplet.Tries.ToString(System.Globalization.CultureInfo.InvariantCulture) + separator);
                }
                output.Write((s.Tab ? ip : ip.PadLeft(15)) + separator);
                output.Write(triplet.ClientName + separator);
                output.Write(sender + separator);
                output.Write(recipient + "\n");
            }
            else
            {
                if (lastIp != ip)
                {
                    output.Write(triplet.ClientName.PadRight(77) + " " + ip.PadLeft(15) + "\n");
                }
                output.Write("      ");
                output.Write(s.ShowTries ? " " + triplet.Tries.ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(2) + " " : "    ");
                output.Write(" " + sender.PadLeft(40) + " ");
                output.Write(" " + recipient.PadLeft(40) + " ");
                output.Write("\n");
            }
            (lastIp, lastSubnet) = (ip, triplet.Subnet);
        }
    }

    /// <summary>Perl's truth of a string: neither empty nor "0".</summary>
    private static bool IsTrue(string text) => text.Length > 0 && text != "0";

    /// <summary>s|\\n|\n|g: the two characters \n in a separator become a newline.</summary>
    private static string Unescape(string text) => text.Replace("\\n", "\n", StringComparison.Ordinal);

    private static (string Database, DbConnection Connection) OpenSqlite(string dbdir)
    {
        var options = new SqliteStoreOptions { Directory = dbdir };
        if (!File.Exists(options.DatabasePath))
        {
            throw new IOException($"can't find database {options.DatabasePath}");
        }
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = options.DatabasePath,
            Mode = SqliteOpenMode.ReadOnly,
            Pooling = false,
            DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds),
        }.ToString());
        try
        {
            connection.Open();
            CheckTable(connection);
        }
        catch (SqliteException ex)
        {
            connection.Dispose();
            throw new IOException($"can't read {options.DatabasePath}: {ex.Message}", ex);
        }
        return (options.DatabasePath, connection);
    }

    private static (string Database, DbConnection Connection) OpenPostgreSql(string uri)
    {
        NpgsqlConnectionStringBuilder builder = PostgreSqlConnectionString.Parse(uri, out string error) ?? throw new FormatException(error);
        string description = PostgreSqlConnectionString.Describe(builder);
        var connection = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            connection.Open();
            CheckTable(connection);
        }
        catch (Exception ex) when (ex is NpgsqlException or PostgresException or InvalidOperationException)
        {
            connection.Dispose();
            throw new IOException($"can't read {description}: {ex.Message}", ex);
        }
        return (description, connection);
    }

    /// <summary>Fails now, with the database's own message, if it has no triplets table.</summary>
    private static void CheckTable(DbConnection connection)
    {
        using System.Data.Common.DbCommand probe = connection.CreateCommand();
        probe.CommandText = "SELECT count(*) FROM triplets WHERE 1 = 0";
        probe.ExecuteScalar();
    }

    private static System.Data.Common.DbCommand Lookup(DbConnection connection, string parameter)
    {
        System.Data.Common.DbCommand find = connection.CreateCommand();
        find.CommandText = $"SELECT first_seen, last_seen FROM triplets WHERE key = {parameter}";
        DbParameter key = find.CreateParameter();
        if (connection is SqliteConnection)
        {
            key.ParameterName = parameter;
        }
        key.DbType = System.Data.DbType.String;
        find.Parameters.Add(key);
        find.Prepare();
        return find;
    }
}

/// <summary>Lines of a log as Perl reads them: bytes (Latin-1, one char a byte), split at '\n'
/// only (a '\r' stays in the line), the newline dropped.</summary>
internal static class LogLines
{
    public static IEnumerable<string> Read(Stream input)
    {
        using var reader = new StreamReader(input, Encoding.Latin1, detectEncodingFromByteOrderMarks: false, 1 << 16);
        var line = new StringBuilder();
        var buffer = new char[1 << 16];
        int read;
        while ((read = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < read; i++)
            {
                if (buffer[i] == '\n')
                {
                    line.Append(buffer, start, i - start);
                    yield return line.ToString();
                    line.Clear();
                    start = i + 1;
                }
            }
            line.Append(buffer, start, read - start);
        }
        if (line.Length > 0)
        {
            yield return line.ToString();
        }
    }
}
