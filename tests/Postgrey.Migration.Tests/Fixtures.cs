using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.Data.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary>One policy request for the real postgrey: who, and at which policy_test_time.</summary>
internal sealed record Delivery(string Client, string Sender, string Recipient, long Time);

/// <summary>Real BerkeleyDB files made by Debian's postgrey, and Debian's db-util as the oracle.</summary>
internal static class Fixtures
{
    public const string RealPostgrey = "/usr/sbin/postgrey";
    public const string DbDumpPath = "/usr/bin/db_dump";
    public const string DbLoadPath = "/usr/bin/db_load";
    public const long T0 = 1_700_000_000;

    /// <summary>The flag sets the import must handle, each with a postgrey command-line.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> FlagSets = new Dictionary<string, string[]>
    {
        ["default"] = [],
        ["lookup-by-host"] = ["--lookup-by-host"],
        ["privacy"] = ["--privacy"],
        ["awl1"] = ["--auto-whitelist-clients=1"],
        ["cidr"] = ["--ipv4cidr=16", "--ipv6cidr=48"],
    };

    /// <summary>
    /// A mixed load: IPv4 and IPv6 clients, each greylisted and retried after 400 s (so that
    /// some clients reach the auto-whitelist), a long recipient, and <paramref name="bulk"/>
    /// triplets more (a B-tree of more than one level).
    /// </summary>
    public static List<Delivery> Load(int bulk)
    {
        var list = new List<Delivery>();
        string[] clients = ["192.0.2.7", "198.51.100.20", "2001:db8::5", "2001:db8:1:2::10", "203.0.113.99"];
        foreach (string client in clients)
        {
            for (int i = 0; i < 3; i++)
            {
                list.Add(new Delivery(client, $"s{i}@example.net", $"r{i}@example.org", T0 + i));
                list.Add(new Delivery(client, $"s{i}@example.net", $"r{i}@example.org", T0 + 400 + i));
            }
        }
        // postgrey cuts request lines at 512 bytes, so its keys stay below BerkeleyDB's overflow
        // threshold (about a quarter page); the overflow tests load their own files.
        list.Add(new Delivery("192.0.2.8", "long@example.net", new string('a', 400) + "@example.org", T0));
        for (int i = 0; i < bulk; i++)
        {
            list.Add(new Delivery($"10.{i % 7}.{i % 250}.{i % 13}", $"bulk{i}@sender{i % 17}.example", $"user{i}@example.com", T0 + 1000 + i));
        }
        return list;
    }

    /// <summary>Runs Debian's postgrey on <paramref name="dbdir"/> with <paramref name="flags"/>,
    /// asks it <paramref name="deliveries"/> over one connection, and stops it (SIGTERM: it closes
    /// its databases, so that the files hold everything).</summary>
    public static async Task<List<string>> RunPostgreyAsync(string dbdir, string[] flags, IEnumerable<Delivery> deliveries)
    {
        Directory.CreateDirectory(dbdir);
        int port = PolicyServerProcess.FreePort();
        var answers = new List<string>();
        var process = PolicyServerProcess.Start(RealPostgrey, [$"--inet=127.0.0.1:{port}", $"--dbdir={dbdir}", .. RunAs(dbdir), .. flags], stopGracefully: true);
        await using (process)
        {
            var endPoint = new IPEndPoint(IPAddress.Loopback, port);
            await process.WaitUntilListeningAsync(endPoint, TimeSpan.FromSeconds(30));
            await using (var client = await PolicyClient.ConnectAsync(endPoint))
            {
                foreach (Delivery d in deliveries)
                {
                    string request = Requests.Policy(clientAddress: d.Client, sender: d.Sender, recipient: d.Recipient, testTime: d.Time);
                    answers.Add(await client.AskAsync(request) ?? throw new InvalidOperationException("postgrey closed the connection"));
                }
            }
            await StopAsync(process, endPoint, dbdir);
        }
        return answers;
    }

    /// <summary>
    /// SIGTERM, after which postgrey closes its databases. Its event loop notices the signal only
    /// when something wakes it, so a connection is opened now and then until it has exited. If
    /// it still runs after 30 s it is killed, and db_recover applies its log to the files, as
    /// postgrey's own next start would (DB_RECOVER).
    /// </summary>
    private static async Task StopAsync(PolicyServerProcess process, IPEndPoint endPoint, string dbdir)
    {
        process.Signal("TERM");
        for (int i = 0; i < 30 && !process.HasExited; i++)
        {
            try
            {
                using var wake = new System.Net.Sockets.Socket(endPoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await wake.ConnectAsync(endPoint);
            }
            catch (System.Net.Sockets.SocketException)
            {
            }
            try
            {
                await process.WaitForExitAsync(TimeSpan.FromSeconds(1));
            }
            catch (TimeoutException)
            {
            }
        }
        if (!process.HasExited)
        {
            process.KillHard();
            await process.WaitForExitAsync(TimeSpan.FromSeconds(10));
            var (exit, _, stderr) = Run("/usr/bin/db_recover", ["-h", dbdir]);
            Assert.True(exit == 0, "db_recover: " + stderr);
        }
    }

    // postgrey drops privileges to --user when root; its dbdir must then belong to that user.
    private static string[] RunAs(string dbdir)
    {
        if (!Requires.IsRoot)
        {
            return [$"--user={Environment.UserName}", $"--group={Environment.UserName}"];
        }
        Assert.Equal(0, Run("chown", ["-R", "postgrey:postgrey", dbdir]).ExitCode);
        return [];
    }

    /// <summary>The pairs of a BerkeleyDB file as db_dump -p prints them, decoded.</summary>
    public static List<KeyValuePair<byte[], byte[]>> DbDumpPairs(string file)
    {
        var (exit, stdout, stderr) = Run(DbDumpPath, ["-p", file]);
        Assert.True(exit == 0, $"db_dump {file}: {stderr}");
        return ParseDump(stdout);
    }

    public static List<KeyValuePair<byte[], byte[]>> ParseDump(string dump)
    {
        string[] lines = dump.Split('\n');
        int start = Array.IndexOf(lines, "HEADER=END") + 1;
        Assert.True(start > 0, "no HEADER=END in:\n" + dump);
        var pairs = new List<KeyValuePair<byte[], byte[]>>();
        for (int i = start; lines[i] != "DATA=END"; i += 2)
        {
            pairs.Add(new(Unescape(lines[i]), Unescape(lines[i + 1])));
        }
        return pairs;
    }

    private static byte[] Unescape(string line)
    {
        Assert.StartsWith(" ", line);
        var bytes = new List<byte>();
        for (int i = 1; i < line.Length; i++)
        {
            if (line[i] != '\\')
            {
                bytes.Add((byte)line[i]);
            }
            else if (line[i + 1] == '\\')
            {
                bytes.Add((byte)'\\');
                i++;
            }
            else
            {
                bytes.Add(byte.Parse(line.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                i += 2;
            }
        }
        return [.. bytes];
    }

    /// <summary>Runs db_load on <paramref name="dump"/> (db_dump's text format) to make <paramref name="file"/>.</summary>
    public static void DbLoad(string file, string dump, params string[] options)
    {
        var (exit, _, stderr) = Run(DbLoadPath, [.. options, file], stdin: dump);
        Assert.True(exit == 0, $"db_load {file}: {stderr}");
    }

    /// <summary>db_load's input for <paramref name="pairs"/> (print format, all ASCII here).</summary>
    public static string Dump(params (string Key, string Value)[] pairs) =>
        "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n" + string.Concat(pairs.Select(p => $" {p.Key}\n {p.Value}\n")) + "DATA=END\n";

    public static void AssertSameRows((List<string> Triplets, List<string> Clients) expected, (List<string> Triplets, List<string> Clients) actual)
    {
        Assert.Equal(expected.Triplets, actual.Triplets);
        Assert.Equal(expected.Clients, actual.Clients);
    }

    public static string Text(byte[] bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>Pairs as text, sorted, for comparing as sets.</summary>
    public static List<string> AsLines(IEnumerable<KeyValuePair<byte[], byte[]>> pairs) =>
        [.. pairs.Select(p => Convert.ToHexString(p.Key) + " " + Convert.ToHexString(p.Value)).Order(StringComparer.Ordinal)];

    /// <summary>Runs the built postgrey.dll with <paramref name="args"/>, stdout and stderr apart.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Postgrey(params string[] args) => BuiltPostgrey.Run(args);

    public static (int ExitCode, string Stdout, string Stderr) Run(string file, IEnumerable<string> args, string? stdin = null) =>
        ToolProcess.Run(file, args, stdin);

    /// <summary>Every triplet and client row of our database, as text lines, sorted.</summary>
    public static (List<string> Triplets, List<string> Clients) OurRows(string dbdir)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(dbdir, "postgrey.sqlite3")};Mode=ReadOnly;Pooling=False");
        connection.Open();
        return (Rows(connection, "SELECT key, first_seen, last_seen FROM triplets"), Rows(connection, "SELECT key, count, last_seen FROM clients"));
    }

    private static List<string> Rows(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        using var reader = command.ExecuteReader();
        var rows = new List<string>();
        while (reader.Read())
        {
            rows.Add(string.Create(CultureInfo.InvariantCulture, $"{reader.GetString(0)} {reader.GetInt64(1)},{reader.GetInt64(2)}"));
        }
        rows.Sort(StringComparer.Ordinal);
        return rows;
    }

    /// <summary>db_dump's pairs as the rows the import must produce (1.37 keys are kept as they are).</summary>
    public static List<string> ExpectedRows(IEnumerable<KeyValuePair<byte[], byte[]>> pairs)
    {
        var rows = pairs.Select(p => Text(p.Key) + " " + Text(p.Value)).ToList();
        rows.Sort(StringComparer.Ordinal);
        return rows;
    }
}
