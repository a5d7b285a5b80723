using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Storage;

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
    private readonly SqliteConnection _connection;
    private readonly Statements _sql;
    private readonly Thread _writer;
    private readonly Thread _checkpointer;
    private readonly SqliteConnection _checkpointConnection;
    private readonly ManualResetEventSlim _stopCheckpoints = new();
    private readonly object _gate = new();
    private readonly Queue<WorkItem> _queue = new();
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
        _checkpointConnection = OpenCheckpointConnection(options);
        _sql = new Statements(connection);
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

        FileStream lockFile = AcquireLock(options.LockPath);
        SqliteConnection? connection = null;
        try
        {
            bool isNew = !File.Exists(options.DatabasePath) || new FileInfo(options.DatabasePath).Length == 0;
            CreatePrivateFile(options.DatabasePath);
            SqliteConnectionStringBuilder writer = ConnectionString(options);
            writer.DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds);
            connection = new SqliteConnection(writer.ToString());
            connection.Open();
            if (isNew)
            {
                // A new database. Small pages: every new triplet lands on a random leaf, and each
                // commit appends every page it touched to the WAL, so the page size is the write
                // amplification. 1 KiB pages sustain twice the rate of new triplets of 4 KiB ones
                // (docs/performance.md). Must be set before the first table and before WAL.
                Schema.Execute(connection, $"PRAGMA page_size = {Schema.PageSize}");
            }
            Schema.Execute(connection, $"PRAGMA busy_timeout = {(int)options.BusyTimeout.TotalMilliseconds}");
            Schema.Execute(connection, "PRAGMA journal_mode = WAL");
            Schema.Execute(connection, options.SyncEveryCommit ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
            Schema.Execute(connection, "PRAGMA wal_autocheckpoint = 0");
            Schema.Execute(connection, $"PRAGMA journal_size_limit = {options.WalRestartBytes}");
            Schema.Execute(connection, $"PRAGMA cache_size = -{options.CacheKiB}");
            Schema.Migrate(connection);
            var store = new SqliteGreylistStore(options, logger, lockFile, connection);
            Log.Opened(logger, options.DatabasePath, options.SyncEveryCommit ? "FULL" : "NORMAL");
            return store;
        }
        catch
        {
            connection?.Dispose();
            lockFile.Dispose();
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
        using SqliteConnection connection = _checkpointConnection;
        long failures = 0;
        long lastReport = 0;
        long pageSize = Schema.Scalar(connection, "PRAGMA page_size");
        using var passive = connection.CreateCommand();
        passive.CommandText = "PRAGMA wal_checkpoint(PASSIVE)";
        using var restart = connection.CreateCommand();
        restart.CommandText = "PRAGMA wal_checkpoint(RESTART)";
        while (!_stopCheckpoints.Wait(_options.CheckpointInterval))
        {
            try
            {
                long walFrames = WalFrames(passive);
                if (walFrames * (pageSize + 24) > _options.WalRestartBytes)
                {
                    WalFrames(restart);
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
    }

    /// <summary>Runs a wal_checkpoint pragma; returns the frames in the WAL (its second column).</summary>
    private static long WalFrames(SqliteCommand checkpoint)
    {
        using SqliteDataReader result = checkpoint.ExecuteReader();
        return result.Read() ? result.GetInt64(1) : 0;
    }

    private static FileStream AcquireLock(string path) => LockFile.Acquire(path);

    // postgrey runs with umask 077; SQLite gives -wal and -shm the database file's mode.
    private static void CreatePrivateFile(string path)
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
        Enqueue(item);
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

    private void WriterLoop()
    {
        var batch = new List<WorkItem>(_options.MaxBatchSize);
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
                    return; // closing and drained
                }
                while (_queue.Count > 0 && batch.Count < _options.MaxBatchSize)
                {
                    batch.Add(_queue.Dequeue());
                }
            }
            RunBatch(batch);
            batch.Clear();
        }
    }

    /// <summary>
    /// One group commit: the whole batch in one transaction, every caller answered after COMMIT.
    /// If anything fails, the batch is rolled back and each decision is run again in a
    /// transaction of its own, so that one failing decision cannot fail the others. (Decisions
    /// are pure functions of the stored state, so running one again is safe.)
    /// </summary>
    private void RunBatch(List<WorkItem> batch)
    {
        try
        {
            _sql.Begin();
            foreach (WorkItem item in batch)
            {
                item.Run(_sql);
            }
            _sql.Commit();
        }
        catch (Exception ex)
        {
            TryRollback();
            if (batch.Count == 1)
            {
                batch[0].Fail(ex);
                return;
            }
            foreach (WorkItem item in batch)
            {
                RunBatch([item]);
            }
            return;
        }

        foreach (WorkItem item in batch)
        {
            item.Complete();
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

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Finishes every queued decision, closes the database (checkpointing the WAL) and
    /// releases postgrey.lock.</summary>
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
        _writer.Join();
        _stopCheckpoints.Set();
        _checkpointer.Join();
        _stopCheckpoints.Dispose();
        _sql.Dispose();
        _connection.Dispose();
        _lock.Dispose();
        Log.Closed(_logger, _options.DatabasePath);
    }

    private abstract class WorkItem
    {
        public abstract void Run(Statements sql);

        public abstract void Complete();

        public abstract void Fail(Exception ex);
    }

    private sealed class DecisionItem<TState, TResult>(TState state, Func<IGreylistTransaction, TState, TResult> decide, bool continueOnWriter) : WorkItem
    {
        private readonly TaskCompletionSource<TResult> _done = new(
            continueOnWriter ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
        private TResult? _result;

        public Task<TResult> Task => _done.Task;

        public override void Run(Statements sql) => _result = decide(sql, state);

        public override void Complete() => _done.TrySetResult(_result!);

        public override void Fail(Exception ex) => _done.TrySetException(ex);
    }

    /// <summary>One maintenance step: up to N rows after a key, expired ones deleted.</summary>
    private sealed class CleanStep(MaintenancePolicy policy, bool triplets, string after, int rows) : WorkItem
    {
        private readonly TaskCompletionSource<(string? Next, long Scanned, long Deleted)> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private (string? Next, long Scanned, long Deleted) _result;

        public Task<(string? Next, long Scanned, long Deleted)> Task => _done.Task;

        public override void Run(Statements sql) => _result = sql.CleanStep(policy, triplets, after, rows);

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
    }
}
