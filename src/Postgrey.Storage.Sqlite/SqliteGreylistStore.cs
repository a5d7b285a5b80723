using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Storage;
using SQLitePCL;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// <see cref="IGreylistStore"/> on one SQLite file in WAL mode. One writer thread owns the
/// connection and runs queued decisions in group commits: a batch is one transaction (if it
/// fails, each decision runs again alone), and no caller is answered before the COMMIT returned.
/// Running every decision on that one thread also makes them linearizable.
/// </summary>
public sealed partial class SqliteGreylistStore : IGreylistStore, IDisposable
{
    private readonly SqliteStoreOptions _options;
    private readonly ILogger _logger;
    private readonly FileStream _lock;
    private readonly Thread _writer;
    private readonly Thread _checkpointer;
    private readonly Timer _watchdog;
    private readonly ManualResetEventSlim _stopCheckpoints = new();
    private readonly object _gate = new();
    private readonly Queue<WorkItem> _queue = new();

    // The batch the writer runs; filled and cleared under _gate, so the watchdog can read it.
    private readonly List<WorkItem> _batch;

    // The writer thread's alone; replaced when the files are written out again (Recovery.cs).
    private SqliteConnection _connection;
    private Statements _sql;

    // The checkpointer thread's alone after the constructor.
    private SqliteConnection _checkpointConnection;
    private bool _closing;
    private bool _disposed;

    private SqliteGreylistStore(SqliteStoreOptions options, ILogger logger, FileStream lockFile, SqliteConnection connection)
    {
        _options = options;
        _logger = logger;
        _lock = lockFile;
        _connection = connection;
        // Opened and used here, not on its thread: SQLite opens the WAL files at the first
        // access, and by the time the thread ran the service may have dropped root and lost the
        // right to open anything in a dbdir below a private directory.
        _files = OpenFiles.Find(options.DatabasePath);
        _checkpointConnection = OpenCheckpointConnection(options);
        _sql = new Statements(connection);
        _batch = new List<WorkItem>(options.MaxBatchSize);
        _watchdog = new Timer(static s => ((SqliteGreylistStore)s!).ExpireOverdue(), this, WatchdogPeriod, WatchdogPeriod);
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "postgrey-db-writer" };
        _writer.Start();
        _checkpointer = new Thread(CheckpointLoop) { IsBackground = true, Name = "postgrey-db-checkpoint" };
        _checkpointer.Start();
    }

    /// <summary>The database file, read-write, never pooled: each connection belongs to one thread.</summary>
    private static SqliteConnectionStringBuilder ConnectionString(SqliteStoreOptions options) => new()
    {
        DataSource = options.DatabasePath,
        Mode = SqliteOpenMode.ReadWrite,
        Pooling = false,
    };

    private static SqliteConnection OpenCheckpointConnection(SqliteStoreOptions options)
    {
        var connection = new SqliteConnection(ConnectionString(options).ToString());
        try
        {
            connection.Open();
            Schema.Execute(connection, $"PRAGMA busy_timeout = {(int)options.BusyTimeout.TotalMilliseconds}");
            Schema.Execute(connection, "PRAGMA wal_checkpoint(PASSIVE)");
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public string DatabasePath => _options.DatabasePath;

    /// <summary>
    /// Takes postgrey.lock (one instance per dbdir, as postgrey), opens or creates the database
    /// with mode 0600, and migrates it. Throws <see cref="StoreLockedException"/> when another
    /// process holds the lock.
    /// </summary>
    public static SqliteGreylistStore Open(SqliteStoreOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        Directory.CreateDirectory(options.Directory);

        FileStream lockFile = LockFile.Acquire(options.LockPath);
        SqliteConnection? connection = null;
        try
        {
            bool isNew = !File.Exists(options.DatabasePath) || new FileInfo(options.DatabasePath).Length == 0;
            CreatePrivateFile(options.DatabasePath);
            connection = OpenWriterConnection(options, isNew);
            if (!isNew)
            {
                IntegrityCheck.Run(connection, options, logger);
            }
            Schema.Migrate(connection);
            var store = new SqliteGreylistStore(options, logger, lockFile, connection);
            Log.Opened(logger, options.DatabasePath, options.SyncEveryCommit ? "FULL" : "NORMAL");
            return store;
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == raw.SQLITE_CORRUPT)
        {
            connection?.Dispose();
            lockFile.Dispose();
            throw new StoreDamagedException(options.DatabasePath, ex.Message, ex);
        }
        catch
        {
            connection?.Dispose();
            lockFile.Dispose();
            throw;
        }
    }

    /// <summary>The writer's connection, with every setting of ours.</summary>
    private static SqliteConnection OpenWriterConnection(SqliteStoreOptions options, bool isNew)
    {
        SqliteConnectionStringBuilder writer = ConnectionString(options);
        writer.DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds);
        var connection = new SqliteConnection(writer.ToString());
        try
        {
            connection.Open();
            if (isNew)
            {
                // A new database. Small pages: every new triplet lands on a random leaf, and each
                // commit appends every page it touched to the WAL, so the page size is the write
                // amplification. 1 KiB pages sustain twice the rate of new triplets of 4 KiB ones
                // (docs/performance.md). Must be set before the first table and before WAL.
                Schema.Execute(connection, $"PRAGMA page_size = {Schema.PageSize}");
            }
            // Short: the writer waits for another process's lock in steps of its own (BeginBatch),
            // so that it can give up as soon as nobody waits for the batch any more, or at a stop.
            // (Statements run through ADO.NET, as here, are retried up to DefaultTimeout.)
            Schema.Execute(connection, $"PRAGMA busy_timeout = {BusyStepMilliseconds}");
            Schema.Execute(connection, "PRAGMA journal_mode = WAL");
            Schema.Execute(connection, options.SyncEveryCommit ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
            Schema.Execute(connection, "PRAGMA wal_autocheckpoint = 0");
            Schema.Execute(connection, $"PRAGMA journal_size_limit = {options.WalRestartBytes}");
            Schema.Execute(connection, $"PRAGMA cache_size = -{options.CacheKiB}");
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies the WAL into the database from a connection of its own, so that the writer never
    /// pays for it: a checkpoint fsyncs, which would stall every decision of the batch behind it.
    /// PASSIVE never blocks the writer. SQLite starts the WAL over only when a checkpoint has
    /// caught up before the next write, which a writer committing every millisecond never lets
    /// happen: past <see cref="SqliteStoreOptions.WalRestartBytes"/> a RESTART checkpoint waits
    /// for the writer's current commit, copies the few frames PASSIVE left, and makes the next
    /// commit start the WAL from its beginning (journal_size_limit then trims the file).
    /// </summary>
    private void CheckpointLoop()
    {
        long failures = 0;
        long lastReport = 0;
        long pageSize = Schema.Scalar(_checkpointConnection, "PRAGMA page_size");
        while (!_stopCheckpoints.Wait(_options.CheckpointInterval))
        {
            if (_files.Changed() is { } change)
            {
                WriteOutAgain(change);
                continue;
            }
            try
            {
                long walFrames = WalFrames(_checkpointConnection, "PASSIVE");
                if (walFrames * (pageSize + 24) > _options.WalRestartBytes)
                {
                    WalFrames(_checkpointConnection, "RESTART");
                }
                if (failures > 0)
                {
                    Log.CheckpointRecovered(_logger, failures);
                    failures = 0;
                }
            }
            catch (SqliteException ex)
            {
                // Said with its cause the first time, then once a minute: twice a second would
                // bury everything else in the log.
                long now = Environment.TickCount64;
                if (failures++ == 0)
                {
                    Log.CheckpointFailed(_logger, ex);
                    lastReport = now;
                }
                else if (now - lastReport >= 60_000)
                {
                    Log.CheckpointStillFailing(_logger, failures, ex.Message);
                    lastReport = now;
                }
            }
        }
        _checkpointConnection.Dispose();
    }

    /// <summary>Runs a wal_checkpoint pragma; returns the frames in the WAL (its second column).</summary>
    private static long WalFrames(SqliteConnection connection, string mode)
    {
        using SqliteCommand checkpoint = connection.CreateCommand();
        checkpoint.CommandText = $"PRAGMA wal_checkpoint({mode})";
        using SqliteDataReader result = checkpoint.ExecuteReader();
        return result.Read() ? result.GetInt64(1) : 0;
    }

    // postgrey runs with umask 077; SQLite gives -wal and -shm the database file's mode.
    internal static void CreatePrivateFile(string path)
    {
        if (File.Exists(path) || OperatingSystem.IsWindows())
        {
            return;
        }
        using var _ = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
    }

    public ValueTask<TResult> ExecuteAsync<TState, TResult>(
        TState state,
        Func<IGreylistTransaction, TState, TResult> decide,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(decide);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<TResult>(cancellationToken);
        }
        var item = new DecisionItem<TState, TResult>(state, decide, _options.ContinueOnWriterThread);
        if (!TryHold(item))
        {
            Enqueue(item);
        }
        return new ValueTask<TResult>(item.Task);
    }

    public async ValueTask<MaintenanceReport> CleanAsync(MaintenancePolicy policy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(policy);
        long tripletsBefore = 0, tripletsAfter = 0, clientsBefore = 0, clientsAfter = 0;
        foreach (bool triplets in new[] { true, false })
        {
            string? after = "";
            while (after is not null)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var step = new CleanStep(policy, triplets, after, _options.MaintenanceStepRows);
                Enqueue(step);
                (after, long scanned, long deleted) = await step.Task;
                if (triplets)
                {
                    tripletsBefore += scanned;
                    tripletsAfter += scanned - deleted;
                }
                else
                {
                    clientsBefore += scanned;
                    clientsAfter += scanned - deleted;
                }
            }
        }
        return new MaintenanceReport(tripletsBefore, tripletsAfter, clientsBefore, clientsAfter);
    }

    private void Enqueue(WorkItem item)
    {
        SetDeadline(item);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closing, this);
            _queue.Enqueue(item);
            if (_queue.Count == 1)
            {
                Monitor.Pulse(_gate);
            }
        }
    }

    /// <summary>When nobody waits for <paramref name="item"/> any more; never for work that runs alone.</summary>
    private void SetDeadline(WorkItem item) =>
        item.Deadline = item.Alone ? long.MaxValue : Environment.TickCount64 + (long)_options.DecisionTimeout.TotalMilliseconds;

    private void WriterLoop()
    {
        while (true)
        {
            lock (_gate)
            {
                _batch.Clear();
                while (_queue.Count == 0 && !_closing)
                {
                    Monitor.Wait(_gate);
                }
                if (_queue.Count == 0)
                {
                    return; // closing and drained
                }
                // Work that must run outside a transaction runs alone.
                while (_queue.Count > 0 && _batch.Count < _options.MaxBatchSize && (_batch.Count == 0 || !_queue.Peek().Alone))
                {
                    _batch.Add(_queue.Dequeue());
                    if (_batch[0].Alone)
                    {
                        break;
                    }
                }
            }
            lock (_connectionLock)
            {
                if (_batch[0].Alone)
                {
                    _batch[0].Run(this);
                }
                else
                {
                    RunBatch(_batch);
                }
            }
        }
    }

    /// <summary>
    /// One group commit: the whole batch in one transaction, every caller answered after COMMIT.
    /// When a decision itself fails, the batch is rolled back and run again without it, so
    /// that one failing decision cannot fail the others (decisions are pure functions of the
    /// stored state, so running one again is safe). When the database fails (locked by
    /// another process past the wait, disk full, I/O error, COMMIT failing), every decision of
    /// the batch fails at once: running each again alone would make each wait or fail again.
    /// Decisions nobody waits for any more (past <see cref="SqliteStoreOptions.DecisionTimeout"/>)
    /// are not run.
    /// </summary>
    private void RunBatch(List<WorkItem> batch, bool begun = false)
    {
        while (true)
        {
            if (!batch.Exists(static i => !i.IsFinished))
            {
                return;
            }
            WorkItem? running = null;
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                if (!begun)
                {
                    BeginBatch(batch);
                }
                begun = false;
                foreach (WorkItem item in batch)
                {
                    if (!item.IsFinished)
                    {
                        running = item;
                        item.Run(this);
                    }
                }
                running = null;
                _sql.Commit();
                StoreMetrics.Committed(started, batch.Count);
            }
            catch (Exception ex)
            {
                TryRollback();
                if (running is null || IsDatabaseFailure(ex))
                {
                    foreach (WorkItem item in batch)
                    {
                        item.Fail(ex);
                    }
                    return;
                }
                running.Fail(ex);
                continue; // the others again, still as one batch
            }

            foreach (WorkItem item in batch)
            {
                item.Complete();
            }
            return;
        }
    }

    /// <summary>
    /// BEGIN IMMEDIATE, waiting for a lock another process holds (the sqlite3 shell, a backup)
    /// in short steps for as long as someone waits for the batch, at most
    /// <see cref="SqliteStoreOptions.BusyTimeout"/>, and not at all once the store is closing.
    /// </summary>
    private void BeginBatch(List<WorkItem> batch)
    {
        long started = Environment.TickCount64;
        long giveUp = started + (long)_options.BusyTimeout.TotalMilliseconds;
        while (true)
        {
            try
            {
                _sql.Begin();
                return;
            }
            catch (SqliteException ex) when (ex.SqliteErrorCode is raw.SQLITE_BUSY or raw.SQLITE_LOCKED)
            {
                if (Volatile.Read(ref _closing) || Environment.TickCount64 >= giveUp || !batch.Exists(static i => !i.IsFinished))
                {
                    // Not a fault of ours to trace: said as a time-out, with what held it.
                    throw new TimeoutException(
                        $"the database is locked by another process (waited {(Environment.TickCount64 - started) / 1000.0:0.#} s): {ex.Message}", ex);
                }
                // SQLite waited BusyStepMilliseconds already; try again.
            }
        }
    }

    /// <summary>Errors of the database as a whole rather than of one decision's data.</summary>
    private static bool IsDatabaseFailure(Exception ex) =>
        ex is TimeoutException or SqliteException { SqliteErrorCode: raw.SQLITE_BUSY or raw.SQLITE_LOCKED or raw.SQLITE_FULL or raw.SQLITE_IOERR
            or raw.SQLITE_READONLY or raw.SQLITE_NOMEM or raw.SQLITE_INTERRUPT or raw.SQLITE_CANTOPEN or raw.SQLITE_NOTADB
            or raw.SQLITE_PERM or raw.SQLITE_PROTOCOL or raw.SQLITE_MISUSE }
        or ObjectDisposedException;

    /// <summary>
    /// Fails, with a <see cref="TimeoutException"/>, every decision waiting longer than
    /// <see cref="SqliteStoreOptions.DecisionTimeout"/>, queued or in the running batch, so that
    /// its caller answers at once whatever the writer is stuck in (another process's lock, a
    /// slow disk). Queued ones are dropped unrun. Runs on a timer of its own.
    /// </summary>
    private void ExpireOverdue()
    {
        List<WorkItem>? overdue = null;
        long now = Environment.TickCount64;
        lock (_gate)
        {
            while (_queue.Count > 0 && _queue.Peek().Deadline <= now)
            {
                (overdue ??= []).Add(_queue.Dequeue());
            }
            foreach (WorkItem item in _batch)
            {
                if (item.Deadline <= now && !item.IsFinished)
                {
                    (overdue ??= []).Add(item);
                }
            }
        }
        if (overdue is null)
        {
            return;
        }
        // Outside the lock: failing a decision runs what awaits it (with ContinueOnWriterThread,
        // on this thread), which may queue the next one.
        string reason = $"the database did not answer within {_options.DecisionTimeout.TotalSeconds:0.#} s (locked by another process, or a slow disk?)";
        foreach (WorkItem item in overdue)
        {
            item.Fail(new TimeoutException(reason)); // one each: awaiting it writes its stack trace
        }
    }

    private void TryRollback()
    {
        try
        {
            if (!_sql.InAutocommit)
            {
                _sql.Rollback();
            }
        }
        catch (SqliteException ex)
        {
            Log.RollbackFailed(_logger, ex);
        }
    }

    /// <summary>Finishes every queued decision, closes the database (checkpointing the WAL) and
    /// releases postgrey.lock. Bounded: a writer still busy after
    /// <see cref="SqliteStoreOptions.DecisionTimeout"/> (stuck in the file system) is left to the
    /// end of the process, so that a stop never waits for the database.</summary>
    public void Dispose()
    {
        if (Thread.CurrentThread == _writer)
        {
            // A continuation running on the writer (ContinueOnWriterThread) would wait for itself.
            throw new InvalidOperationException("the store cannot be disposed from its own writer thread");
        }
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _closing = true;
            Monitor.PulseAll(_gate);
        }
        _stopCheckpoints.Set();
        TimeSpan grace = _options.DecisionTimeout + TimeSpan.FromSeconds(1);
        bool finished = _writer.Join(grace) & _checkpointer.Join(grace);
        _watchdog.Dispose();
        ExpireOverdue();
        if (!finished)
        {
            lock (_gate)
            {
                foreach (WorkItem item in _queue)
                {
                    item.Fail(new ObjectDisposedException(nameof(SqliteGreylistStore)));
                }
            }
            Log.CloseAbandoned(_logger, _options.DatabasePath, grace.TotalSeconds);
            return;
        }
        _stopCheckpoints.Dispose();
        lock (_connectionLock) // a loop's round may still be committing
        {
            _sql.Dispose();
            _connection.Dispose();
        }
        _lock.Dispose();
        Log.Closed(_logger, _options.DatabasePath);
    }

    private abstract class WorkItem
    {
        /// <summary>Environment.TickCount64 past which nobody waits for it (set when queued).</summary>
        public long Deadline { get; set; }

        /// <summary>Runs outside any transaction, alone, never expires (<see cref="Recovery"/>).</summary>
        public virtual bool Alone => false;

        /// <summary>Answered or failed: not to be run (again).</summary>
        public abstract bool IsFinished { get; }

        public abstract void Run(SqliteGreylistStore store);

        public abstract void Complete();

        public abstract void Fail(Exception ex);
    }

    private sealed class DecisionItem<TState, TResult>(TState state, Func<IGreylistTransaction, TState, TResult> decide, bool continueOnWriter) : WorkItem
    {
        private readonly TaskCompletionSource<TResult> _done = new(
            continueOnWriter ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
        private TResult? _result;

        public Task<TResult> Task => _done.Task;

        public override bool IsFinished => _done.Task.IsCompleted;

        public override void Run(SqliteGreylistStore store) => _result = decide(store._sql, state);

        public override void Complete() => _done.TrySetResult(_result!);

        public override void Fail(Exception ex) => _done.TrySetException(ex);
    }

    /// <summary>One maintenance step: up to N rows after a key, expired ones deleted.</summary>
    private sealed class CleanStep(MaintenancePolicy policy, bool triplets, string after, int rows) : WorkItem
    {
        private readonly TaskCompletionSource<(string? Next, long Scanned, long Deleted)> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private (string? Next, long Scanned, long Deleted) _result;

        public Task<(string? Next, long Scanned, long Deleted)> Task => _done.Task;

        public override bool IsFinished => _done.Task.IsCompleted;

        public override void Run(SqliteGreylistStore store) => _result = store._sql.CleanStep(policy, triplets, after, rows);

        public override void Complete() => _done.TrySetResult(_result);

        public override void Fail(Exception ex) => _done.TrySetException(ex);
    }

    private static partial class Log
    {
        [LoggerMessage(4001, LogLevel.Information, "database {Path} open (WAL, synchronous={Sync})", EventName = "StoreOpened")]
        public static partial void Opened(ILogger logger, string path, string sync);

        [LoggerMessage(4002, LogLevel.Information, "database {Path} closed", EventName = "StoreClosed")]
        public static partial void Closed(ILogger logger, string path);

        [LoggerMessage(4004, LogLevel.Error, "WAL checkpoint failed; will try again", EventName = "CheckpointFailed")]
        public static partial void CheckpointFailed(ILogger logger, Exception exception);

        [LoggerMessage(4005, LogLevel.Error, "WAL checkpoint still failing ({Failures} times): {Reason}", EventName = "CheckpointStillFailing")]
        public static partial void CheckpointStillFailing(ILogger logger, long failures, string reason);

        [LoggerMessage(4006, LogLevel.Warning, "WAL checkpoint works again after {Failures} failures", EventName = "CheckpointRecovered")]
        public static partial void CheckpointRecovered(ILogger logger, long failures);

        [LoggerMessage(4003, LogLevel.Error, "rollback failed", EventName = "RollbackFailed")]
        public static partial void RollbackFailed(ILogger logger, Exception exception);

        [LoggerMessage(4020, LogLevel.Warning, "database {Path} still busy {Seconds} s after the stop; leaving it to the end of the process (SQLite's WAL keeps every committed decision)", EventName = "CloseAbandoned")]
        public static partial void CloseAbandoned(ILogger logger, string path, double seconds);
    }
}
