using System.Globalization;
using System.Text;
using Serilog.Events;
using Serilog.Formatting;

namespace Postgrey.Logging;

/// <summary>
/// postgrey's console output: the formatter's lines on stdout, a batch per write. Under systemd
/// each line starts with its syslog priority (<c>&lt;5&gt;</c>), which journald reads
/// (SyslogLevelPrefix=) so that the journal and mail.log get the right level.
/// </summary>
internal sealed class ConsoleSink : BatchedSink
{
    private readonly TextWriter _output;
    private readonly bool _levelPrefix;
    private readonly StringWriter _event = new(CultureInfo.InvariantCulture);

    public ConsoleSink(ITextFormatter formatter, bool levelPrefix = false, Stream? output = null, int queueLimit = PostgreyLogging.QueueLimit)
        : base(formatter, queueLimit)
    {
        _levelPrefix = levelPrefix;
        _output = new StreamWriter(output ?? Console.OpenStandardOutput(), new UTF8Encoding(false), 64 * 1024) { AutoFlush = false };
    }

    protected override void Write(IReadOnlyCollection<LogEvent> batch)
    {
        try
        {
            foreach (LogEvent logEvent in batch)
            {
                if (!_levelPrefix)
                {
                    Formatter.Format(logEvent, _output);
                    continue;
                }
                StringBuilder text = _event.GetStringBuilder();
                text.Clear();
                Formatter.Format(logEvent, _event);
                char severity = (char)('0' + SyslogSeverity.Of(logEvent.Level));
                foreach (string line in text.ToString().TrimEnd('\n').Split('\n'))
                {
                    _output.Write('<');
                    _output.Write(severity);
                    _output.Write('>');
                    _output.Write(line);
                    _output.Write('\n');
                }
            }
            _output.Flush();
        }
        catch (IOException)
        {
            // stdout closed (journald restarted): nothing to write to; keep serving
        }
    }

    protected override void Close()
    {
        try
        {
            _output.Flush();
        }
        catch (IOException)
        {
        }
        _output.Dispose();
        _event.Dispose();
    }
}
