using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey replay</c>: policy-test's job (postgrey's contrib, Debian's /usr/sbin/policy-test):
/// the policy requests of a Postfix mail log sent, in the log's order, to a running policy
/// server over one connection, each with policy_test_time set to the log's time (ours honours it
/// with --allow-test-time; postgrey always does). To benchmark a server, or to seed a database
/// from the logs. Prints the answers counted by action, and the throughput.
/// </summary>
internal static class ReplayCommand
{
    private const int ProblemsShown = 5;

    public static Command Create()
    {
        var log = new Argument<string>("LOGFILE") { Description = "the Postfix mail log; - for standard input" };
        var inet = new Option<string?>("--inet") { Description = "the policy server's TCP address", HelpName = "HOST:PORT" };
        var unix = new Option<string?>("--unix") { Description = "the policy server's Unix socket", HelpName = "PATH" };
        var year = new Option<int?>("--year")
        {
            Description = "the year of the log's first line, for syslog stamps without one (default: this year, or last year if that puts it in the future)",
            HelpName = "YYYY",
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value is < 1970 or > 9999)
                {
                    r.AddError($"--year: '{text}' is not a year from 1970 on");
                    return null;
                }
                return value;
            },
        };
        var command = new Command("replay", "Send the policy requests of a Postfix mail log, with the log's times (policy_test_time), to a running policy server: to benchmark it, or to seed its database. Start ours with --allow-test-time.")
        {
            log, inet, unix, year,
        };
        command.Validators.Add(r =>
        {
            string? i = r.GetValue(inet), u = r.GetValue(unix);
            if ((i is null) == (u is null))
            {
                r.AddError("give the server as --inet=HOST:PORT or --unix=PATH");
            }
            else if (i is not null && !TryEndPoint(i, out _, out _))
            {
                r.AddError($"--inet: '{i}' is not HOST:PORT");
            }
            // An unknown --option would otherwise be taken for the log file's name.
            if (r.GetResult(log)?.Tokens.FirstOrDefault(t => t.Value.Length > 1 && t.Value[0] == '-') is { } unknown)
            {
                r.AddError($"unknown option {unknown.Value.Split('=')[0]}");
            }
        });
        command.SetAction(r => Run(r.GetValue(log)!, r.GetValue(inet), r.GetValue(unix), r.GetValue(year)));
        return command;
    }

    private static int Run(string logFile, string? inet, string? unix, int? year)
    {
        string server = inet ?? unix!;
        Stream input;
        try
        {
            input = logFile == "-" ? Console.OpenStandardInput() : File.OpenRead(logFile);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return ToolCommand.Fail("replay", $"can't read {logFile}: {ex.Message}");
        }

        using (input)
        {
            Socket socket;
            try
            {
                socket = Connect(inet, unix);
            }
            catch (SocketException ex)
            {
                return ToolCommand.Fail("replay", $"can't connect to {server}: {ex.Message}");
            }

            var requests = new PostfixLogRequests(year, TimeZoneInfo.Local, DateTimeOffset.UtcNow);
            var actions = new SortedDictionary<string, long>(StringComparer.Ordinal);
            long sent = 0, lineNumber = 0;
            var clock = Stopwatch.StartNew();
            using (socket)
            using (var stream = new NetworkStream(socket, ownsSocket: false))
            {
                var answers = new AnswerReader(stream);
                var request = new StringBuilder(512);
                try
                {
                    foreach (string line in LogLines.Read(input))
                    {
                        lineNumber++;
                        ReplayedRequest? next = requests.Add(line, out string? problem);
                        if (problem is not null && requests.Skipped <= ProblemsShown)
                        {
                            Console.Error.WriteLine($"postgrey replay: WARNING: {logFile} line {lineNumber} skipped: {problem}");
                        }
                        if (next is null)
                        {
                            continue;
                        }
                        Format(request.Clear(), next);
                        // The log's bytes as they were (read as Latin-1), as Postfix sent them.
                        stream.Write(Encoding.Latin1.GetBytes(request.ToString()));
                        string action = answers.ReadAction()
                            ?? throw new IOException($"the server closed the connection after {sent} answers");
                        sent++;
                        actions[action] = actions.GetValueOrDefault(action) + 1;
                    }
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    return ToolCommand.Fail("replay", $"{server} or {logFile}: {ex.Message}");
                }
            }
            clock.Stop();

            double seconds = clock.Elapsed.TotalSeconds;
            string rate = seconds > 0 ? $", {sent / seconds:F0} requests/s" : "";
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{sent} requests in {seconds:F3} s{rate}"));
            foreach (var (action, count) in actions.OrderByDescending(a => a.Value))
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{count,10} {action}"));
            }
            if (requests.Skipped > 0)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{requests.Skipped} {(requests.Skipped == 1 ? "line" : "lines")} skipped: not syslog lines, or Postfix NOQUEUE lines that are not a RCPT reject"));
            }
        }
        return 0;
    }

    /// <summary>policy-test's request: its three fixed attributes and what the log gave.</summary>
    private static void Format(StringBuilder request, ReplayedRequest r) =>
        request.Append("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=SMTP\n")
            .Append("client_name=").Append(r.ClientName).Append('\n')
            .Append("client_address=").Append(r.ClientAddress).Append('\n')
            .Append("sender=").Append(r.Sender).Append('\n')
            .Append("recipient=").Append(r.Recipient).Append('\n')
            .Append("policy_test_time=").Append(r.Time.ToString(CultureInfo.InvariantCulture)).Append("\n\n");

    private static Socket Connect(string? inet, string? unix)
    {
        if (unix is not null)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Connect(new UnixDomainSocketEndPoint(unix));
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            return socket;
        }
        TryEndPoint(inet!, out string host, out int port);
        var tcp = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            tcp.Connect(host, port);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
        return tcp;
    }

    /// <summary>HOST:PORT, [IPV6]:PORT.</summary>
    private static bool TryEndPoint(string text, out string host, out int port)
    {
        host = "";
        port = 0;
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is 0 or > 65535)
        {
            return false;
        }
        host = text[..colon];
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
            return IPAddress.TryParse(host, out _);
        }
        return !host.Contains(':', StringComparison.Ordinal);
    }

    /// <summary>Reads answers ("action=...", then an empty line) and gives each action's first word.</summary>
    private sealed class AnswerReader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[4096];
        private int _start, _end;

        public string? ReadAction()
        {
            string? action = null;
            while (true)
            {
                string? line = ReadLine();
                if (line is null)
                {
                    return null;
                }
                if (line.Length == 0)
                {
                    return action ?? "(no action)";
                }
                if (line.StartsWith("action=", StringComparison.Ordinal))
                {
                    string value = line[7..];
                    int space = value.IndexOfAny([' ', '\t']);
                    action = (space < 0 ? value : value[..space]).ToUpperInvariant();
                }
            }
        }

        private string? ReadLine()
        {
            var line = new List<byte>();
            while (true)
            {
                if (_start == _end)
                {
                    _start = 0;
                    _end = stream.Read(_buffer, 0, _buffer.Length);
                    if (_end == 0)
                    {
                        return null;
                    }
                }
                int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (newline < 0)
                {
                    line.AddRange(_buffer.AsSpan(_start, _end - _start));
                    _start = _end;
                    continue;
                }
                line.AddRange(_buffer.AsSpan(_start, newline - _start));
                _start = newline + 1;
                return Encoding.UTF8.GetString([.. line]);
            }
        }
    }
}
