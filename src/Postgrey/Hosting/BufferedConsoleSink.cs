using System.Text;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting;

namespace Postgrey.Hosting;

/// <summary>
/// Writes log events to standard output from a thread of its own, many lines per write(2):
/// a decision line per request would otherwise cost a locked, flushed console write on the
/// request path. Lines keep their order; a full queue (a stalled journald) makes callers wait
/// rather than lose lines; everything queued is written at dispose.
/// </summary>
internal sealed class BufferedConsoleSink : ILogEventSink, IDisposable
{
    private const int MaxQueued = 100_000;

    private readonly ITextFormatter _formatter;
    private readonly TextWriter _output;
    private readonly object _gate = new();
    private readonly Queue<LogEvent> _queue = new();
    private readonly Thread _writer;
    private bool _closing;

    public BufferedConsoleSink(ITextFormatter formatter, Stream? output = null)
    {
        _formatter = formatter;
        _output = new StreamWriter(output ?? Console.OpenStandardOutput(), new UTF8Encoding(false), 64 * 1024) { AutoFlush = false };
        _writer = new Thread(WriteLoop) { IsBackground = true, Name = "postgrey-log-writer" };
        _writer.Start();
    }

    public void Emit(LogEvent logEvent)
    {
        lock (_gate)
        {
            while (_queue.Count >= MaxQueued && !_closing)
            {
                Monitor.Wait(_gate);
            }
            _queue.Enqueue(logEvent);
            if (_queue.Count == 1)
            {
                Monitor.PulseAll(_gate);
            }
        }
    }

    private void WriteLoop()
    {
        var batch = new List<LogEvent>();
        while (true)
        {
            lock (_gate)
            {
                while (_queue.Count == 0 && !_closing)
                {
                    Monitor.Wait(_gate);
                }
                if (_queue.Count == 0)
                {
                    return;
                }
                while (_queue.Count > 0)
                {
                    batch.Add(_queue.Dequeue());
                }
                Monitor.PulseAll(_gate); // room again for waiting callers
            }
            try
            {
                foreach (LogEvent logEvent in batch)
                {
                    _formatter.Format(logEvent, _output);
                }
                _output.Flush();
            }
            catch (IOException)
            {
                // stdout closed (journald restarted): nothing to write to; keep serving
            }
            batch.Clear();
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _closing = true;
            Monitor.PulseAll(_gate);
        }
        _writer.Join();
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
