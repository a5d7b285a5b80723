using System.Text;
using Serilog.Events;

namespace Postgrey.Hosting;

/// <summary>
/// postgrey's console output: one line per event, escaped as Net::Server escapes it. Under
/// systemd each line starts with its syslog priority (<c>&lt;5&gt;</c>), which journald reads
/// (SyslogLevelPrefix=) so that the journal and mail.log get the right level.
/// </summary>
internal sealed class ConsoleSink : BufferedSink
{
    private readonly TextWriter _output;
    private readonly bool _levelPrefix;

    public ConsoleSink(bool levelPrefix = false, Stream? output = null)
    {
        _levelPrefix = levelPrefix;
        _output = new StreamWriter(output ?? Console.OpenStandardOutput(), new UTF8Encoding(false), 64 * 1024) { AutoFlush = false };
        Start();
    }

    protected override void Write(List<LogEvent> batch)
    {
        try
        {
            foreach (LogEvent logEvent in batch)
            {
                foreach (string line in NetServerLogFormatter.Lines(logEvent))
                {
                    if (_levelPrefix)
                    {
                        _output.Write('<');
                        _output.Write((char)('0' + SyslogSeverity.Of(logEvent.Level)));
                        _output.Write('>');
                    }
                    _output.Write(NetServerLogFormatter.Escape(line));
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
    }
}
