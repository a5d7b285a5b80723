using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Postgrey.Logging;
using Postgrey.Testing;
using Serilog;
using Serilog.Formatting.Compact;

namespace Postgrey.Tests;

/// <summary>The log sinks over real sockets and streams: what syslog, journald and the console
/// receive.</summary>
public sealed class LogSinkTests : IDisposable
{
    private static readonly NetServerLogFormatter SyslogText = new(LogEscaping.Controls);

    private readonly TempDirectory _dir = new();

    private static Serilog.Core.Logger Logger(BatchedSink sink) =>
        new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Batched(sink).CreateLogger();

    [Fact]
    public async Task Syslog_OneRfc3164DatagramPerLine_WithFacilityAndPostgreysPriorities()
    {
        using var syslog = new DatagramListener(_dir.File("log"));
        using (var logger = Logger(new SyslogSink(SyslogText, syslog.Path, 16, "postgrey")))
        {
            logger.Information("action=pass, reason=triplet found, sender={Sender}", "jörg@example.net");
            logger.Warning("whitelisted: {Client}", "mx.example.net");
            logger.Debug("tab\there");
        }

        await syslog.WaitForAsync(m => m.Contains("tab", StringComparison.Ordinal));
        string pid = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        string[] got = [.. syslog.Messages];
        // local0 = 16: 16*8 + notice(5) / warning(4) / info(6); 8-bit text as it is, controls as %XX.
        Assert.Matches($@"^<133>[A-Z][a-z]{{2}} [ 1-3]\d \d\d:\d\d:\d\d postgrey\[{pid}\]: action=pass, reason=triplet found, sender=jörg@example\.net$", got[0]);
        Assert.EndsWith($"postgrey[{pid}]: whitelisted: mx.example.net", got[1], StringComparison.Ordinal);
        Assert.StartsWith("<132>", got[1], StringComparison.Ordinal);
        Assert.StartsWith("<134>", got[2], StringComparison.Ordinal);
        Assert.EndsWith("tab%09here", got[2], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Journal_NativeProtocol_CarriesPriorityFacilityAndIdentifier()
    {
        using var journal = new DatagramListener(_dir.File("journal"));
        using (var logger = Logger(new JournalSink(SyslogText, journal.Path, 2, "postgrey")))
        {
            logger.Information("action=greylist, reason=new, recipient={Recipient}", "b@example.org");
        }

        await journal.WaitForAsync(_ => true);
        byte[] datagram = journal.Datagrams[0];
        string head = Encoding.ASCII.GetString(datagram, 0, IndexOf(datagram, "MESSAGE\n"u8));
        Assert.Equal($"PRIORITY=5\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=postgrey\nSYSLOG_PID={Environment.ProcessId}\n", head);
        int at = head.Length + "MESSAGE\n".Length;
        int length = (int)BinaryPrimitives.ReadUInt64LittleEndian(datagram.AsSpan(at, 8));
        Assert.Equal("action=greylist, reason=new, recipient=b@example.org", Encoding.UTF8.GetString(datagram, at + 8, length));
        Assert.Equal(at + 8 + length + 1, datagram.Length);
    }

    [Fact]
    public void Syslog_WithoutADaemon_SaysSoOnce_AndLosesOnlyTheLines()
    {
        var problems = new StringWriter();
        using (var logger = Logger(new SyslogSink(SyslogText, _dir.File("none"), 2, "postgrey", problems)))
        {
            for (int i = 0; i < 100; i++)
            {
                logger.Information("line {N}", i);
            }
        }
        string[] reported = problems.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal($"postgrey: can't log to {_dir.File("none")}: no such socket (is a syslog daemon running?); still serving, log lines are lost until it is back", Assert.Single(reported));
    }

    [Fact]
    public void Console_UnderSystemd_PrefixesEachLineWithItsPriority_AndEscapesAsNetServer()
    {
        var output = new MemoryStream();
        using (var logger = Logger(new ConsoleSink(new NetServerLogFormatter(LogEscaping.NetServer), levelPrefix: true, output)))
        {
            logger.Information("sender={Sender}", "jörg@example.net");
            logger.Warning("HUP received: reloading whitelists...");
            logger.Error(new InvalidOperationException("boom"), "database error");
        }
        string[] lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n');
        Assert.Equal("<5>sender=j%C3%B6rg@example.net", lines[0]);
        Assert.Equal("<4>HUP received: reloading whitelists...", lines[1]);
        Assert.Equal("<3>database error", lines[2]);
        Assert.Equal("<3>System.InvalidOperationException: boom", lines[3]);
    }

    [Fact]
    public async Task Syslog_DestinationThatNeverDrains_DropsAndCountsWithoutBlockingTheCaller()
    {
        const int Lines = 20_000;
        string path = _dir.File("stalled");
        // A syslog daemon that stopped reading: once its socket's queue is full, every send blocks.
        using var stalled = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        stalled.Bind(new UnixDomainSocketEndPoint(path));
        var problems = new StringWriter();
        var sink = new SyslogSink(SyslogText, path, 2, "postgrey", TextWriter.Synchronized(problems), queueLimit: 1000);
        var logger = Logger(sink);
        var received = new List<string>();
        try
        {
            // The caller must never wait for the destination: all lines are handed over although
            // nothing is read.
            await Task.Run(() =>
            {
                for (int i = 0; i < Lines; i++)
                {
                    logger.Information("line {N}", i);
                }
            }).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
            Assert.True(sink.Queue.Dropped > 0);
        }
        finally
        {
            // The daemon reads again: what was queued is written out at dispose, with the count of
            // what was dropped.
            using var reading = new CancellationTokenSource();
            var reader = Task.Run(() => ReadAll(stalled, received, reading.Token));
            logger.Dispose();
            await reading.CancelAsync();
            await reader.WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
        }

        var dropped = received.Select(m => Regex.Match(m, @": (\d+) log lines dropped: the log destination did not keep up$")).Where(m => m.Success).ToList();
        Assert.NotEmpty(dropped);
        Assert.All(received.Where(m => !m.Contains("dropped", StringComparison.Ordinal)), m => Assert.Matches(@"postgrey\[\d+\]: line \d+$", m));
        long droppedCount = dropped.Sum(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        Assert.Equal(sink.Queue.Dropped, droppedCount);
        Assert.Equal(Lines, received.Count - dropped.Count + droppedCount); // every line written or counted
        Assert.All(received.Where(m => m.Contains("dropped", StringComparison.Ordinal)), m => Assert.StartsWith("<20>", m, StringComparison.Ordinal)); // mail.warning
        // ...and said at once on stderr (not where the lines go), once.
        string onset = $"postgrey: {path} does not keep up: log lines are dropped (their count follows in the log)";
        for (int i = 0; i < 300 && !problems.ToString().Contains(onset, StringComparison.Ordinal); i++)
        {
            await Task.Delay(10, TestContext.Current.CancellationToken); // it is written from the thread pool
        }
        Assert.Equal(onset, Assert.Single(problems.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public async Task Syslog_JsonFormat_EachEventIsOneCompactJsonObjectAfterTheTag()
    {
        using var syslog = new DatagramListener(_dir.File("log"));
        using (var logger = Logger(new SyslogSink(new CompactJsonFormatter(), syslog.Path, 2, "postgrey")))
        {
            logger.Warning("whitelisted: {Client}", "jörg\nforged line");
        }

        string message = await syslog.WaitForAsync(_ => true);
        Assert.Single(syslog.Messages);
        string tag = $"postgrey[{Environment.ProcessId}]: ";
        Assert.StartsWith("<20>", message, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(message[(message.IndexOf(tag, StringComparison.Ordinal) + tag.Length)..]);
        Assert.Equal("whitelisted: {Client}", json.RootElement.GetProperty("@mt").GetString());
        Assert.Equal("Warning", json.RootElement.GetProperty("@l").GetString());
        Assert.Equal("jörg\nforged line", json.RootElement.GetProperty("Client").GetString());
    }

    private static void ReadAll(Socket socket, List<string> received, CancellationToken stop)
    {
        var buffer = new byte[64 * 1024];
        socket.ReceiveTimeout = 200;
        while (true)
        {
            try
            {
                int n = socket.Receive(buffer);
                received.Add(Encoding.UTF8.GetString(buffer, 0, n));
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.TimedOut)
            {
                if (stop.IsCancellationRequested)
                {
                    return; // written out, and nothing more came for a while
                }
            }
        }
    }

    private static int IndexOf(byte[] data, ReadOnlySpan<byte> value) => data.AsSpan().IndexOf(value);

    public void Dispose() => _dir.Dispose();
}
