using Serilog;
using Serilog.Configuration;
using Serilog.Core;
using Serilog.Debugging;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Parsing;

namespace Postgrey.Logging;

/// <summary>
/// A writer of log lines for Serilog's batching (<see cref="IBatchedLogEventSink"/>): Serilog's
/// loop hands it the queued events many at a time, one batch after the other, so that a decision
/// line per request costs the request path only a queue write, not a locked, flushed write. It
/// never throws: a line that cannot be written is lost, as with postgrey, and never retried.
/// </summary>
internal abstract class BatchedSink : IBatchedLogEventSink, IDisposable
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

    public Task EmitBatchAsync(IReadOnlyCollection<LogEvent> batch)
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
        return Task.CompletedTask;
    }

    public Task OnEmptyBatchAsync() => Task.CompletedTask;

    /// <summary>Writes one batch; runs on Serilog's batching loop, one batch at a time.</summary>
    protected abstract void Write(IReadOnlyCollection<LogEvent> batch);

    /// <summary>Releases the destination after the last batch.</summary>
    protected abstract void Close();

    /// <summary>Called by Serilog's batching sink once it has written out what was queued.</summary>
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
#pragma warning disable CA1031 // see EmitBatchAsync
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
/// Counts what waits in Serilog's batching queue for one sink, and drops (and counts) an event
/// when <see cref="Limit"/> are waiting: a stalled syslogd or journald costs log lines, never a
/// blocked request. Serilog's own <see cref="BatchingOptions.QueueLimit"/> drops silently
/// (its channel's TryWrite result is not reported), so the admission is counted here, with the
/// same limit; Serilog's limit is then the backstop that never has to act.
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
    /// <summary>A line reaches its destination within this time, and the idle loop wakes this often.</summary>
    public static readonly TimeSpan BufferingTime = TimeSpan.FromMilliseconds(50);

    /// <summary><paramref name="sink"/> behind Serilog's batching, with its queue counted.</summary>
    public static LoggerConfiguration Batched(this LoggerSinkConfiguration writeTo, BatchedSink sink)
    {
        ArgumentNullException.ThrowIfNull(writeTo);
        ArgumentNullException.ThrowIfNull(sink);
        var options = new BatchingOptions
        {
            BatchSizeLimit = 1000,
            BufferingTimeLimit = BufferingTime,
            EagerlyEmitFirstEvent = true,
            QueueLimit = sink.Queue.Limit,
        };
        return writeTo.Sink(LoggerSinkConfiguration.Wrap(batching => new CountedSink(batching, sink.Queue), c => c.Sink(sink, options)));
    }

    private sealed class CountedSink(ILogEventSink batching, LogQueueCounter queue) : ILogEventSink, IDisposable
    {
        public void Emit(LogEvent logEvent)
        {
            if (queue.TryEnter())
            {
                batching.Emit(logEvent);
            }
        }

        public void Dispose() => (batching as IDisposable)?.Dispose();
    }
}
