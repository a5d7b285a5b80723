using System.Collections.Concurrent;
using Serilog;
using Serilog.Configuration;
using Serilog.Core;
using Serilog.Debugging;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Parsing;

namespace Postgrey.Logging;

/// <summary>
/// A writer of log lines in batches: <see cref="BackgroundSink"/>'s thread hands it the queued
/// events many at a time, one batch after the other, so that a decision
/// line per request costs the request path only a queue write, not a locked, flushed write. It
/// never throws: a line that cannot be written is lost, as with postgrey, and never retried.
/// </summary>
internal abstract class BatchedSink : IDisposable
{
    private static readonly MessageTemplate DroppedTemplate =
        new MessageTemplateParser().Parse("{Dropped} log lines dropped: the log destination did not keep up");

    // A destination that keeps up only in part would otherwise get a notice with every batch.
    private static readonly TimeSpan NoticeEvery = TimeSpan.FromSeconds(10);

    private bool _closed;
    private long _lastNotice = long.MinValue / 2;

    protected BatchedSink(ITextFormatter formatter, int queueLimit)
    {
        Formatter = formatter;
        Queue = new LogQueueCounter(queueLimit);
    }

    protected ITextFormatter Formatter { get; }

    /// <summary>What is queued for this sink, and what was dropped.</summary>
    public LogQueueCounter Queue { get; }

    /// <summary>Writes one batch; called by <see cref="BackgroundSink"/>'s thread only.</summary>
    public void EmitBatch(IReadOnlyCollection<LogEvent> batch)
    {
        try
        {
            WriteDroppedNotice(force: false);
            Write(batch);
        }
#pragma warning disable CA1031 // a log writer must not stop the service, whatever its destination throws
        catch (Exception ex)
#pragma warning restore CA1031
        {
            SelfLog.WriteLine("postgrey: log batch lost: {0}", ex);
        }
        finally
        {
            Queue.Leave(batch.Count);
        }
    }

    /// <summary>Writes one batch; runs on the sink's own thread, one batch at a time.</summary>
    protected abstract void Write(IReadOnlyCollection<LogEvent> batch);

    /// <summary>Releases the destination after the last batch.</summary>
    protected abstract void Close();

    /// <summary>Called by <see cref="BackgroundSink"/> once it has written out what was queued.</summary>
    public void Dispose()
    {
        if (_closed)
        {
            return;
        }
        _closed = true;
        try
        {
            WriteDroppedNotice(force: true);
        }
#pragma warning disable CA1031 // see EmitBatch
        catch (Exception ex)
#pragma warning restore CA1031
        {
            SelfLog.WriteLine("postgrey: log line lost: {0}", ex);
        }
        Close();
        GC.SuppressFinalize(this);
    }

    // Said in the log itself, where the lines are missing, at most every 10 s and at the end:
    // stderr may be the very pipe that stalled (systemd gives stdout and stderr to the journal).
    private void WriteDroppedNotice(bool force)
    {
        long now = Environment.TickCount64;
        if (!Queue.HasDropped || (!force && now - _lastNotice < (long)NoticeEvery.TotalMilliseconds))
        {
            return;
        }
        _lastNotice = now;
        long dropped = Queue.TakeDropped();
        if (dropped > 0)
        {
            Write([new LogEvent(DateTimeOffset.Now, LogEventLevel.Warning, null, DroppedTemplate, [new LogEventProperty("Dropped", new ScalarValue(dropped))])]);
        }
    }
}

/// <summary>
/// Counts what waits in a sink's queue, and drops (and counts) an event when <see cref="Limit"/>
/// are waiting: a stalled syslogd or journald costs log lines, never a blocked request.
/// </summary>
internal sealed class LogQueueCounter(int limit)
{
    private long _queued;
    private long _dropped;
    private long _droppedTotal;
    private int _dropping;

    public int Limit { get; } = limit;

    /// <summary>Called when dropping first starts, once, on the thread pool: the caller that
    /// dropped must not wait for whatever it does.</summary>
    public Action? DroppingStarted { get; set; }

    /// <summary>Every event dropped so far.</summary>
    public long Dropped => Interlocked.Read(ref _droppedTotal);

    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _queued) <= Limit)
        {
            return true;
        }
        Interlocked.Decrement(ref _queued);
        Interlocked.Increment(ref _dropped);
        Interlocked.Increment(ref _droppedTotal);
        if (Interlocked.Exchange(ref _dropping, 1) == 0 && DroppingStarted is { } started)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_ => started(), null);
        }
        return false;
    }

    public void Leave(int count) => Interlocked.Add(ref _queued, -count);

    /// <summary>The events dropped since the last call.</summary>
    public long TakeDropped() => Interlocked.Exchange(ref _dropped, 0);

    public bool HasDropped => Interlocked.Read(ref _dropped) > 0;
}

internal static class BatchedSinkConfiguration
{
    /// <summary><paramref name="sink"/> behind its own writer thread (<see cref="BackgroundSink"/>), with its queue counted.</summary>
    public static LoggerConfiguration Batched(this LoggerSinkConfiguration writeTo, BatchedSink sink)
    {
        ArgumentNullException.ThrowIfNull(writeTo);
        ArgumentNullException.ThrowIfNull(sink);
        return writeTo.Sink(new BackgroundSink(sink));
    }
}

/// <summary>
/// The queue in front of a <see cref="BatchedSink"/> and the one thread that drains it: it wakes
/// every <see cref="BufferingTime"/>, or as soon as <see cref="BatchSize"/> events wait, and writes
/// what it finds as one batch. A decision line costs the request path an enqueue, and no wake-up:
/// Serilog's own batching loop awaits its channel whenever it is empty, so with one line per
/// request each line woke a thread-pool worker, and the pool's workers then spun waiting for more
/// work (measured on the load benchmark: a fifth of the service's CPU in that spin, and a whole
/// core at one connection).
/// </summary>
internal sealed class BackgroundSink : ILogEventSink, IDisposable
{
    /// <summary>A line reaches its destination within this time.</summary>
    public static readonly TimeSpan BufferingTime = TimeSpan.FromMilliseconds(50);

    /// <summary>Events written per batch; this many waiting wake the writer early.</summary>
    public const int BatchSize = 1000;

    // Waits for the last batches at the end; a destination that blocks longer loses them.
    private static readonly TimeSpan StopWait = TimeSpan.FromSeconds(5);

    private readonly BatchedSink _sink;
    private readonly ConcurrentQueue<LogEvent> _queue = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private long _enqueued;
    private volatile bool _stopping;
    private int _disposed;

    public BackgroundSink(BatchedSink sink)
    {
        _sink = sink;
        // A background thread: a destination that hangs must not keep the process from exiting.
        _thread = new Thread(Run) { IsBackground = true, Name = "postgrey-log" };
        _thread.Start();
    }

    public void Emit(LogEvent logEvent)
    {
        if (_stopping || !_sink.Queue.TryEnter())
        {
            return;
        }
        _queue.Enqueue(logEvent);
        if (Interlocked.Increment(ref _enqueued) % BatchSize == 0)
        {
            _wake.Set();
        }
    }

    private void Run()
    {
        var batch = new List<LogEvent>(BatchSize);
        while (true)
        {
            bool stopping = _stopping;
            if (!stopping)
            {
                _wake.WaitOne(BufferingTime);
            }
            while (_queue.TryDequeue(out LogEvent? logEvent))
            {
                batch.Add(logEvent);
                if (batch.Count == BatchSize)
                {
                    Write(batch);
                }
            }
            if (batch.Count > 0)
            {
                Write(batch);
            }
            if (stopping)
            {
                return;
            }
        }
    }

    private void Write(List<LogEvent> batch)
    {
        _sink.EmitBatch(batch);
        batch.Clear();
    }

    /// <summary>Writes out what is queued, then closes the destination.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _stopping = true;
        _wake.Set();
        if (_thread.Join(StopWait))
        {
            _sink.Dispose();
        }
        _wake.Dispose();
    }
}
