using Serilog.Core;
using Serilog.Events;

namespace Postgrey.Hosting;

/// <summary>
/// Hands log events to a thread of its own that writes them many at a time: a decision line per
/// request would otherwise cost a locked, flushed write on the request path. Lines keep their
/// order; a full queue (a stalled journald or syslogd) makes callers wait rather than lose
/// lines; everything queued is written at dispose.
/// </summary>
internal abstract class BufferedSink : ILogEventSink, IDisposable
{
    private const int MaxQueued = 100_000;

    private readonly object _gate = new();
    private readonly Queue<LogEvent> _queue = new();
    private Thread? _writer;
    private bool _closing;

    /// <summary>Starts the writer thread; called by the derived constructor once it is ready.</summary>
    protected void Start()
    {
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

    /// <summary>Writes one batch; runs on the writer thread only. Failures are the derived
    /// class's to handle: nothing here may stop the service.</summary>
    protected abstract void Write(List<LogEvent> batch);

    /// <summary>Releases the output after the last batch.</summary>
    protected abstract void Close();

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
            Write(batch);
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
        _writer?.Join();
        Close();
    }
}
