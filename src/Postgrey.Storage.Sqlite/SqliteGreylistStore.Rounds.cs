using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;
using SQLitePCL;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// Run-to-completion (<see cref="IDecisionRounds"/>): the epoll loop's decisions of one round are
/// committed on the loop's thread, in one transaction, when the writer thread is idle and nothing
/// is queued for it; else they go to the writer as one batch. Per request this saves the wake-up
/// of the writer and the post back to the loop (two context switches, an eventfd write and a
/// thread-pool hop): the CPU the server spent beside the decision itself.
/// </summary>
public sealed partial class SqliteGreylistStore : IDecisionRounds
{
    // A round's commit slower than this (a disk under pressure) sends the rounds of the next
    // InlinePause to the writer: the loop must keep accepting and answering, and only the writer
    // path has the watchdog that answers DUNNO when the database hangs. Well above what a busy
    // machine's scheduler adds to a commit of a few milliseconds.
    private const long SlowInlineMilliseconds = 500;
    private static readonly long InlinePauseMilliseconds = 5_000;

    // Held by whoever runs statements on the writer's connection: the writer, or a loop in EndRound.
    private readonly object _connectionLock = new();
    private readonly List<WorkItem> _round = [];

    // The managed id of the thread whose round is open; 0 when none is.
    private int _roundThread;
    private long _inlineAgainAt;

    public void BeginRound() => _roundThread = Environment.CurrentManagedThreadId;

    public void EndRound()
    {
        _roundThread = 0;
        if (_round.Count == 0)
        {
            return;
        }
        try
        {
            // An fsync per commit (--sync-every-commit) is too slow to wait for on the loop: the
            // writer overlaps it with the loop's next round.
            if (_options.SyncEveryCommit || Environment.TickCount64 < _inlineAgainAt || !TryRunInline())
            {
                EnqueueRound();
            }
        }
        finally
        {
            _round.Clear();
        }
    }

    /// <summary>Held for the round instead of queued: called by ExecuteAsync on the round's thread.</summary>
    private bool TryHold(WorkItem item)
    {
        if (_roundThread != Environment.CurrentManagedThreadId)
        {
            return false;
        }
        SetDeadline(item);
        _round.Add(item);
        return true;
    }

    private bool TryRunInline()
    {
        lock (_gate)
        {
            // Queued work (older decisions, a maintenance step, a recovery) goes first, in order.
            if (_closing || _queue.Count > 0)
            {
                return false;
            }
        }
        if (!Monitor.TryEnter(_connectionLock))
        {
            return false; // the writer is running a batch
        }
        try
        {
            long started = Environment.TickCount64;
            if (!TryBeginNow())
            {
                return false;
            }
            RunBatch(_round, begun: true);
            if (Environment.TickCount64 - started > SlowInlineMilliseconds)
            {
                _inlineAgainAt = Environment.TickCount64 + InlinePauseMilliseconds;
            }
            return true;
        }
        finally
        {
            Monitor.Exit(_connectionLock);
        }
    }

    /// <summary>BEGIN IMMEDIATE without waiting: another process holding the write lock (the
    /// sqlite3 shell, a backup) sends the round to the writer, which waits for it in steps.</summary>
    private bool TryBeginNow()
    {
        sqlite3 db = _connection.Handle!;
        raw.sqlite3_busy_timeout(db, 0);
        try
        {
            _sql.Begin();
            return true;
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode is raw.SQLITE_BUSY or raw.SQLITE_LOCKED)
        {
            return false;
        }
        finally
        {
            raw.sqlite3_busy_timeout(db, BusyStepMilliseconds);
        }
    }

    private void EnqueueRound()
    {
        lock (_gate)
        {
            if (_closing)
            {
                var closed = new ObjectDisposedException(nameof(SqliteGreylistStore));
                foreach (WorkItem item in _round)
                {
                    item.Fail(closed);
                }
                return;
            }
            bool wasEmpty = _queue.Count == 0;
            foreach (WorkItem item in _round)
            {
                _queue.Enqueue(item);
            }
            if (wasEmpty)
            {
                Monitor.Pulse(_gate);
            }
        }
    }
}
