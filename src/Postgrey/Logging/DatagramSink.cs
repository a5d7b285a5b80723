using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Serilog.Events;
using Serilog.Formatting;

namespace Postgrey.Logging;

/// <summary>
/// Sends each log line as one datagram to a local Unix socket: the syslog socket or journald's.
/// Without a daemon listening it keeps serving, says so once on stderr and tries again every
/// 10 seconds (a syslogd restarted by log rotation must not lose us for good).
/// </summary>
internal abstract class DatagramSink : BatchedSink
{
    private static readonly TimeSpan RetryEvery = TimeSpan.FromSeconds(10);

    private readonly string _path;
    private readonly TextWriter _problems;
    private Socket? _socket;
    private long _retryAfter;
    private bool _reported;
    private readonly StringWriter _event = new(CultureInfo.InvariantCulture);

    protected DatagramSink(ITextFormatter formatter, string path, TextWriter? problems, int queueLimit)
        : base(formatter, queueLimit)
    {
        _path = path;
        _problems = problems ?? Console.Error;
        Connect();
        // stderr is not where these lines go, so it can say at once that they are being lost.
        Queue.DroppingStarted = () => Say($"postgrey: {_path} does not keep up: log lines are dropped (their count follows in the log)");
    }

    protected static string Pid { get; } = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);

    /// <summary>True while the socket takes our lines.</summary>
    public bool Connected => _socket is not null;

    /// <summary>The datagram for one line of <paramref name="logEvent"/>.</summary>
    protected abstract ReadOnlySpan<byte> Encode(LogEvent logEvent, ReadOnlySpan<char> line);

    protected override void Write(IReadOnlyCollection<LogEvent> batch)
    {
        StringBuilder text = _event.GetStringBuilder();
        foreach (LogEvent logEvent in batch)
        {
            text.Clear();
            Formatter.Format(logEvent, _event);
            // One datagram per line ('\n' only: the formatter escapes every other control).
            ReadOnlySpan<char> rest = text.ToString().AsSpan().TrimEnd('\n');
            while (_socket is not null || Connect())
            {
                int end = rest.IndexOf('\n');
                Send(Encode(logEvent, end < 0 ? rest : rest[..end]));
                if (end < 0)
                {
                    break;
                }
                rest = rest[(end + 1)..];
            }
            // without a daemon the lines are lost, as with postgrey
        }
    }

    private void Send(ReadOnlySpan<byte> datagram)
    {
        try
        {
            _socket!.Send(datagram);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The daemon went away (restart, rotation): reconnect and send this line once more.
            Disconnect();
            if (Connect())
            {
                try
                {
                    _socket!.Send(datagram);
                }
                catch (SocketException again)
                {
                    Report(again.Message);
                    Disconnect();
                }
            }
        }
    }

    private bool Connect()
    {
        long now = Environment.TickCount64;
        if (now < _retryAfter)
        {
            return false;
        }
        var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(_path));
            _socket = socket;
            _reported = false;
            return true;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            _retryAfter = now + (long)RetryEvery.TotalMilliseconds;
            // .NET reports a missing socket file as "Cannot assign requested address".
            Report(File.Exists(_path) ? ex.Message : "no such socket (is a syslog daemon running?)");
            return false;
        }
    }

    private void Report(string reason)
    {
        if (_reported)
        {
            return;
        }
        _reported = true;
        Say($"postgrey: can't log to {_path}: {reason}; still serving, log lines are lost until it is back");
    }

    private void Say(string problem)
    {
        lock (_problems)
        {
            try
            {
                _problems.WriteLine(problem);
                _problems.Flush();
            }
            catch (IOException)
            {
                // detached: stderr is /dev/null
            }
        }
    }

    private void Disconnect()
    {
        _socket?.Dispose();
        _socket = null;
    }

    protected override void Close()
    {
        Disconnect();
        _event.Dispose();
    }
}

/// <summary>
/// The local syslog socket (<c>/dev/log</c>: rsyslog, syslog-ng or journald), as postgrey logs
/// with <c>-d</c>: RFC 3164 as Sys::Syslog sends it, <c>&lt;PRI&gt;Mmm dd hh:mm:ss postgrey[PID]: text</c>,
/// the facility from --syslog-facility.
/// </summary>
internal sealed class SyslogSink : DatagramSink
{
    private readonly int _facility;
    private readonly string _tag;
    private readonly byte[] _buffer = new byte[16 * 1024];

    public SyslogSink(ITextFormatter formatter, string path, int facility, string ident, TextWriter? problems = null, int queueLimit = PostgreyLogging.QueueLimit)
        : base(formatter, path, problems, queueLimit)
    {
        _facility = facility;
        _tag = $"{ident}[{Pid}]: ";
    }

    protected override ReadOnlySpan<byte> Encode(LogEvent logEvent, ReadOnlySpan<char> line)
    {
        DateTime local = logEvent.Timestamp.ToLocalTime().DateTime;
        int priority = (_facility * 8) + SyslogSeverity.Of(logEvent.Level);
        var writer = new DatagramWriter(_buffer);
        writer.Ascii(string.Create(CultureInfo.InvariantCulture, $"<{priority}>{local:MMM} {local.Day,2} {local:HH:mm:ss} {_tag}"));
        writer.Utf8(line);
        return writer.Written;
    }
}

/// <summary>
/// journald's native protocol (<c>/run/systemd/journal/socket</c>), used when systemd runs us:
/// each line is an entry with PRIORITY, SYSLOG_FACILITY and SYSLOG_IDENTIFIER, so that
/// <c>journalctl -u postgrey</c> shows levels and the syslog daemon files it under mail.
/// </summary>
internal sealed class JournalSink : DatagramSink
{
    public const string DefaultPath = "/run/systemd/journal/socket";

    private readonly string _fields;
    private readonly byte[] _buffer = new byte[16 * 1024];

    public JournalSink(ITextFormatter formatter, string path, int facility, string ident, TextWriter? problems = null, int queueLimit = PostgreyLogging.QueueLimit)
        : base(formatter, path, problems, queueLimit)
    {
        _fields = $"SYSLOG_FACILITY={facility.ToString(CultureInfo.InvariantCulture)}\nSYSLOG_IDENTIFIER={ident}\nSYSLOG_PID={Pid}\n";
    }

    protected override ReadOnlySpan<byte> Encode(LogEvent logEvent, ReadOnlySpan<char> line)
    {
        var writer = new DatagramWriter(_buffer);
        writer.Ascii("PRIORITY=");
        writer.Ascii(((char)('0' + SyslogSeverity.Of(logEvent.Level))).ToString());
        writer.Ascii("\n");
        writer.Ascii(_fields);
        // MESSAGE in the binary form: name, newline, 64-bit little-endian length, bytes, newline.
        writer.Ascii("MESSAGE\n");
        writer.LengthPrefixedUtf8(line);
        writer.Ascii("\n");
        return writer.Written;
    }
}

/// <summary>Fills a fixed buffer; text that does not fit is cut (a log line is never worth more).</summary>
internal ref struct DatagramWriter(byte[] buffer)
{
    private readonly Span<byte> _buffer = buffer;
    private int _length;

    public readonly ReadOnlySpan<byte> Written => _buffer[.._length];

    public void Ascii(string text)
    {
        int n = Math.Min(text.Length, _buffer.Length - _length);
        _length += System.Text.Encoding.ASCII.GetBytes(text.AsSpan(0, n), _buffer[_length..]);
    }

    public void Utf8(ReadOnlySpan<char> text) => _length += EncodeCut(text, _buffer[_length..]);

    public void LengthPrefixedUtf8(ReadOnlySpan<char> text)
    {
        Span<byte> length = _buffer.Slice(_length, 8);
        _length += 8;
        int n = EncodeCut(text, _buffer[_length..^1]);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)n);
        _length += n;
    }

    private static int EncodeCut(ReadOnlySpan<char> text, Span<byte> target)
    {
        var encoding = System.Text.Encoding.UTF8;
        if (encoding.GetByteCount(text) <= target.Length)
        {
            return encoding.GetBytes(text, target);
        }
        return encoding.GetBytes(text[..(target.Length / 3)], target);
    }
}
