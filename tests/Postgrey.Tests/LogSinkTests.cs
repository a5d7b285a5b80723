using System.Buffers.Binary;
using System.Text;
using Postgrey.Hosting;
using Postgrey.Testing;
using Serilog;

namespace Postgrey.Tests;

/// <summary>The log sinks over real sockets and streams: what syslog, journald and the console
/// receive.</summary>
public sealed class LogSinkTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    [Fact]
    public async Task Syslog_OneRfc3164DatagramPerLine_WithFacilityAndPostgreysPriorities()
    {
        using var syslog = new DatagramListener(_dir.File("log"));
        using (var logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(new SyslogSink(syslog.Path, 16, "postgrey")).CreateLogger())
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
        using (var logger = new LoggerConfiguration().WriteTo.Sink(new JournalSink(journal.Path, 2, "postgrey")).CreateLogger())
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
        using (var logger = new LoggerConfiguration().WriteTo.Sink(new SyslogSink(_dir.File("none"), 2, "postgrey", problems)).CreateLogger())
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
        using (var logger = new LoggerConfiguration().MinimumLevel.Debug().WriteTo.Sink(new ConsoleSink(levelPrefix: true, output)).CreateLogger())
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

    private static int IndexOf(byte[] data, ReadOnlySpan<byte> value) => data.AsSpan().IndexOf(value);

    public void Dispose() => _dir.Dispose();
}
