using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Npgsql;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.PostgreSql;

/// <summary>
/// <see cref="IGreylistStore"/> on a PostgreSQL database that several MX hosts share.
/// <para>
/// One writer thread owns one connection and runs queued decisions in batches, each batch one
/// transaction in two network round trips: (1) BEGIN, advisory locks on the batch's keys in
/// sorted order, and one SELECT of every row with <c>= ANY</c>; the decisions then run in
/// memory, one after the other; (2) one upsert per table over <c>unnest</c> arrays, and COMMIT.
/// Callers are answered after COMMIT returned. The per-key advisory locks make decisions on one
/// key linearizable across every host (they also cover rows that do not exist yet, which row
/// locks cannot); on one host the single writer does it. Under load a batch waits up to
/// <see cref="PostgreSqlStoreOptions.BatchWait"/> to hold <see cref="PostgreSqlStoreOptions.BatchTarget"/> decisions.
/// </para>
/// <para>
/// When the server is unreachable, every decision fails at once with
/// <see cref="StoreUnavailableException"/> (the engine answers DUNNO), the outage is logged when
/// it starts and when it ends, and the writer reconnects with a growing back-off. A decision
/// that is not committed within <see cref="PostgreSqlStoreOptions.Timeout"/> is answered DUNNO
/// as well, so a hung server cannot hold Postfix.
/// </para>
/// </summary>
public sealed partial class PostgreSqlGreylistStore : IGreylistStore, IDisposable
{
    /// <summary>Connection-level SQLSTATEs that mean "the server is not there (yet)", not "you are wrong".</summary>
    private static readonly HashSet<string> UnavailableStates = new(StringComparer.Ordinal)
    {
        PostgresErrorCodes.CannotConnectNow, // starting up or shutting down
        PostgresErrorCodes.AdminShutdown,
        PostgresErrorCodes.CrashShutdown,
        PostgresErrorCodes.TooManyConnections,
        PostgresErrorCodes.ConnectionFailure,
    };

    private readonly PostgreSqlStoreOptions _options;
    private readonly ILogger _logger;
    private readonly FileStream? _lock;
    private readonly NpgsqlDataSource _dataSource;
    private readonly Thread _writer;
    private readonly object _gate = new();
    private readonly Queue<WorkItem> _queue = new();
    private readonly KeyRecorder _keys = new();
    private readonly Timer _watchdog;

    // The batch the writer runs; filled and cleared under _gate, so the watchdog can read it.
    private readonly List<WorkItem> _batch;
    private bool _closing;
    private bool _disposed;
    private bool _gathering; // the writer waits for BatchTarget decisions (under _gate)

    // Owned by the writer thread.
    private NpgsqlConnection? _connection;
    private BatchView? _view;
    private bool _schemaReady;
    private TimeSpan _backoff;
    private long _nextAttempt;
    private long _downSince;
    private int _lastBatch;

    // Read by callers.
    private volatile bool _down;
    private long _dunnoWhileDown;
    private int _slow;

    private PostgreSqlGreylistStore(PostgreSqlStoreOptions options, ILogger logger, FileStream? lockFile, string connectionString)
    {
        _options = options;
        _logger = logger;
        _lock = lockFile;
        // The slim builder: no reflection-based type mapping, so the Native AOT build stays free
        // of trim warnings. Arrays for = ANY and unnest; TLS for sslmode=require and up.
        _dataSource = new NpgsqlSlimDataSourceBuilder(connectionString).EnableArrays().EnableTransportSecurity().Build();
        _backoff = options.ReconnectMin;
        _batch = new List<WorkItem>(options.MaxBatchSize);
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "postgrey-pg-writer" };
        // One timer for every waiting decision, not one per request (Task.WaitAsync made one
        // each, and sent every answer through the thread pool).
        _watchdog = new Timer(static s => ((PostgreSqlGreylistStore)s!).ExpireOverdue(), this, Timeout.Infinite, Timeout.Infinite);
    }

    public string Description => _options.Description;

    /// <summary>Batches committed and keys read outside the first pass, for tests and the benchmark.</summary>
    public long Batches { get; private set; }

    public long ExtraReads => _view?.ExtraReads ?? 0;

    /// <summary>
    /// Connects, creates or migrates the schema, and starts the writer. A server that cannot be
    /// reached is not an error here: the store starts in the "down" state, answers DUNNO, and
    /// connects once the server is back. What an admin must fix (a wrong password, a missing
    /// database or role, no right to create the tables) throws <see cref="PostgreSqlStoreException"/>.
    /// </summary>
    /// <remarks><paramref name="lockPath"/>: postgrey.lock in --dbdir, held for the store's life: one instance per dbdir, as with SQLite.</remarks>
    public static PostgreSqlGreylistStore Open(PostgreSqlStoreOptions options, ILogger logger, string? lockPath = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var builder = new NpgsqlConnectionStringBuilder(options.ConnectionString)
        {
            // One long-lived connection for decisions, a short one per maintenance run: a pool
            // would only keep connections that a server restart has broken.
            Pooling = false,
            Timeout = Math.Max(1, (int)Math.Ceiling(options.Timeout.TotalSeconds)),
            // Past this Npgsql cancels, then breaks the connection: the writer reconnects. Longer
            // than the callers' own bound, which answers them DUNNO first.
            CommandTimeout = Math.Max(2, 2 * (int)Math.Ceiling(options.Timeout.TotalSeconds)),
            // A server that vanished without a FIN (power cut, partition) is noticed in seconds.
            KeepAlive = 5,
            // The writer runs the same few statements for ever: prepared once on the server,
            // each batch skips their parse and plan (PostgreSQL's CPU per decision -20 to -35%,
            // docs/performance.md, session 8).
            MaxAutoPrepare = 16,
            AutoPrepareMinUsages = 2,
            ApplicationName = string.IsNullOrEmpty(new NpgsqlConnectionStringBuilder(options.ConnectionString).ApplicationName)
                ? "postgrey"
                : new NpgsqlConnectionStringBuilder(options.ConnectionString).ApplicationName,
        };
        FileStream? lockFile = lockPath is null ? null : AcquireLock(lockPath);
        var store = new PostgreSqlGreylistStore(options, logger, lockFile, builder.ConnectionString);
        try
        {
            store.ConnectAtStart();
        }
        catch
        {
            store._watchdog.Dispose();
            store._dataSource.Dispose();
            lockFile?.Dispose();
            throw;
        }
        store._writer.Start();
        store._watchdog.Change(WatchdogPeriod, WatchdogPeriod);
        return store;
    }

    private void ConnectAtStart()
    {
        try
        {
            Connect();
        }
        catch (Exception ex) when (IsUnavailable(ex))
        {
            GoDown(ex);
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            throw new PostgreSqlStoreException($"can't use database {_options.Description}: {Explain(ex)}", ex);
        }
    }

    /// <summary>Opens the writer's connection and, the first time, brings the schema up to date.</summary>
    private void Connect()
    {
        NpgsqlConnection connection = _dataSource.CreateConnection();
        try
        {
            connection.Open();
            if (!_schemaReady)
            {
                Schema.Migrate(connection);
                if (Schema.MissingPrivileges(connection) is { } missing)
                {
                    throw new InvalidOperationException($"role \"{Schema.CurrentUser(connection)}\" lacks {missing} (GRANT them, or run postgrey db init --grant)");
                }
                _schemaReady = true;
                Log.Opened(_logger, _options.Description, connection.PostgreSqlVersion.ToString(), Schema.CurrentVersion);
            }
            // A prepared statement keeps the plan made when it was prepared; made on a new,
            // nearly empty table, that could be a sequential scan, kept while the table grows
            // until autovacuum next analyzes it. Every statement of the writer reads by key.
            Schema.Execute(connection, "SET enable_seqscan = off");
        }
        catch
        {
            connection.Dispose();
            throw;
        }
        _connection = connection;
        _view = new BatchView(connection);
        if (_down)
        {
            _down = false;
            long dunno = Interlocked.Exchange(ref _dunnoWhileDown, 0);
            Log.Reconnected(_logger, _options.Description, Stopwatch.GetElapsedTime(_downSince).TotalSeconds, dunno);
        }
        _backoff = _options.ReconnectMin;
    }

    /// <summary>Forgets the connection and says so, once per outage.</summary>
    private void GoDown(Exception ex)
    {
        _connection?.Dispose();
        _connection = null;
        _view = null;
        _nextAttempt = Stopwatch.GetTimestamp() + (long)(_backoff.TotalSeconds * Stopwatch.Frequency);
        _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, _options.ReconnectMax.Ticks));
        if (!_down)
        {
            _downSince = Stopwatch.GetTimestamp();
            _down = true;
            Log.Unreachable(_logger, _options.Description, Explain(ex), _options.ReconnectMax.TotalSeconds);
        }
    }

    /// <summary>True for "the server is not there": refused, reset, timed out, shutting down.</summary>
    private static bool IsUnavailable(Exception ex)
    {
        if (ex is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException
            || ex.InnerException is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException)
        {
            return false; // a passfile or certificate named but missing: the admin's to fix
        }
        if (ex is PostgresException pg)
        {
            return UnavailableStates.Contains(pg.SqlState);
        }
        if (ex is NpgsqlException npgsql)
        {
            // Npgsql wraps socket, stream and time-out failures; its own "you are wrong" errors
            // (no password given, bad SSL setup) have no such cause.
            return npgsql.IsTransient || npgsql.InnerException is SocketException or IOException or TimeoutException;
        }
        return ex is SocketException or IOException or TimeoutException;
    }

    /// <summary>What an admin needs to read: the server's message and its SQLSTATE, or the socket's.</summary>
    private static string Explain(Exception ex) => ex switch
    {
        PostgresException pg => $"{pg.MessageText} (SQLSTATE {pg.SqlState})",
        NpgsqlException { InnerException: { } inner } npgsql when inner is SocketException or IOException or TimeoutException => $"{npgsql.Message}: {inner.Message}",
        _ => ex.Message,
    };

    private static FileStream AcquireLock(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return LockFile.Acquire(path); // the one lock of every store: no link followed
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
        if (_down)
        {
            // Fast DUNNO: the writer is waiting out its back-off.
            Interlocked.Increment(ref _dunnoWhileDown);
            return ValueTask.FromException<TResult>(new StoreUnavailableException($"{_options.Description} is unreachable"));
        }
        // The bounded wait is the watchdog's (ExpireOverdue): past the deadline the caller gets
        // StoreUnavailableException (DUNNO), whatever the writer is stuck in. Like the SQLite
        // store, a decision once queued is not cancelled: it is answered within that bound.
        var item = new DecisionItem<TState, TResult>(state, decide, Stopwatch.GetTimestamp() + (long)(_options.Timeout.TotalSeconds * Stopwatch.Frequency), _options.ContinueOnWriterThread);
        Enqueue(item);
        return new ValueTask<TResult>(item.Task);
    }

    private static readonly TimeSpan WatchdogPeriod = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Fails every decision waiting past <see cref="PostgreSqlStoreOptions.Timeout"/>, queued or
    /// in the running batch, so that its caller answers DUNNO at once whatever the writer is stuck
    /// in. Queued ones are dropped unrun; a running one may still commit (as before: its caller
    /// has been answered DUNNO, which never holds mail). Runs on a timer of its own.
    /// </summary>
    private void ExpireOverdue()
    {
        List<WorkItem>? overdue = null;
        long now = Stopwatch.GetTimestamp();
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
        if (Interlocked.Exchange(ref _slow, 1) == 0)
        {
            Log.Slow(_logger, _options.Description, (long)_options.Timeout.TotalMilliseconds);
        }
        // Outside the lock: failing a decision may run what awaits it (ContinueOnWriterThread).
        foreach (WorkItem item in overdue)
        {
            item.Fail(new StoreUnavailableException($"{_options.Description} did not answer within {_options.Timeout.TotalMilliseconds} ms", new TimeoutException()));
        }
    }

    private void Enqueue(WorkItem item)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closing, this);
            _queue.Enqueue(item);
            if (_queue.Count == 1 || (_gathering && _queue.Count == _options.BatchTarget))
            {
                Monitor.Pulse(_gate);
            }
        }
    }

    private void WriterLoop()
    {
        List<WorkItem> batch = _batch;
        while (true)
        {
            lock (_gate)
            {
                while (_queue.Count == 0 && !_closing)
                {
                    if (_connection is null)
                    {
                        // Down: wake up for the next attempt even if no request comes, so
                        // that the return of the server is noticed (and logged) on its own.
                        long wait = (_nextAttempt - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency;
                        if (wait <= 0)
                        {
                            break;
                        }
                        Monitor.Wait(_gate, (int)Math.Min(wait, int.MaxValue));
                    }
                    else
                    {
                        Monitor.Wait(_gate);
                    }
                }
                if (_queue.Count == 0 && _closing)
                {
                    return;
                }
                if (_queue.Count < _options.BatchTarget && _lastBatch >= _options.LoadedBatch && _connection is not null)
                {
                    GatherLocked();
                }
                long now = Stopwatch.GetTimestamp();
                while (_queue.Count > 0 && batch.Count < _options.MaxBatchSize)
                {
                    WorkItem item = _queue.Dequeue();
                    if (item.Deadline < now)
                    {
                        // Its caller has been answered DUNNO already; deciding now would record
                        // a first-seen for a request that was not greylisted.
                        item.Fail(new StoreUnavailableException("timed out in the queue"));
                        continue;
                    }
                    batch.Add(item);
                }
            }
            if (_connection is null && !TryReconnect())
            {
                FailAll(batch, new StoreUnavailableException($"{_options.Description} is unreachable"));
                ClearBatch();
                continue;
            }
            _lastBatch = batch.Count;
            if (batch.Count > 0)
            {
                RunBatch(batch);
                ClearBatch();
            }
        }
    }

    /// <summary>
    /// Under load, waits (called holding <see cref="_gate"/>, which the wait releases) until
    /// <see cref="PostgreSqlStoreOptions.BatchTarget"/> decisions are queued or
    /// <see cref="PostgreSqlStoreOptions.BatchWait"/> has passed: PostgreSQL's commit_delay for
    /// our batches. One instance serving 100 busy connections rarely waits (its batches hold
    /// about 48); the same load split over two MX hosts makes batches of 26, twice as many, each
    /// paying the same round trips, BEGIN and COMMIT.
    /// </summary>
    private void GatherLocked()
    {
        long until = Stopwatch.GetTimestamp() + (long)(_options.BatchWait.TotalSeconds * Stopwatch.Frequency);
        _gathering = true;
        try
        {
            while (_queue.Count < _options.BatchTarget && !_closing)
            {
                long left = until - Stopwatch.GetTimestamp();
                if (left <= 0)
                {
                    return;
                }
                // Whole milliseconds: Monitor.Wait(TimeSpan) truncates, and 0 would spin.
                Monitor.Wait(_gate, (int)Math.Min(int.MaxValue, (left * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency));
            }
        }
        finally
        {
            _gathering = false;
        }
    }

    private void ClearBatch()
    {
        lock (_gate)
        {
            _batch.Clear();
        }
    }

    private bool TryReconnect()
    {
        if (Stopwatch.GetTimestamp() < _nextAttempt)
        {
            return false;
        }
        try
        {
            Connect();
            return true;
        }
        catch (Exception ex)
        {
            // Whatever it is (also a password changed meanwhile), decisions cannot be made:
            // DUNNO, and try again later. The first failure of an outage is logged.
            GoDown(ex);
            return false;
        }
    }

    private void FailAll(List<WorkItem> batch, Exception ex)
    {
        foreach (WorkItem item in batch)
        {
            Interlocked.Increment(ref _dunnoWhileDown);
            item.Fail(ex);
        }
    }

    /// <summary>One batch, retried whole after a deadlock or serialization failure (which can
    /// only follow a key the first pass missed); the connection lost: every caller DUNNO.</summary>
    private void RunBatch(List<WorkItem> batch)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                long started = Stopwatch.GetTimestamp();
#pragma warning disable VSTHRD002 // the writer's own thread, no synchronization context: nothing it blocks can be what completes the task
                RunBatchOnceAsync(batch).GetAwaiter().GetResult();
#pragma warning restore VSTHRD002
                // Answered here, on the writer, not where the last round trip completed: what
                // awaits a decision may run on this thread (ContinueOnWriterThread), and one that
                // disposed the store from a pool or socket-engine thread would wait for itself.
                foreach (WorkItem item in batch)
                {
                    item.Complete();
                }
                StoreMetrics.Committed(started, batch.Count);
                Batches++;
                if (Volatile.Read(ref _slow) == 1 && Interlocked.Exchange(ref _slow, 0) == 1)
                {
                    Log.AnsweringAgain(_logger, _options.Description);
                }
                return;
            }
#pragma warning disable CA1031 // anything escaping here would end the writer thread, and the process with it
            catch (Exception ex)
#pragma warning restore CA1031
            {
                if (_connection is not { State: System.Data.ConnectionState.Open } || IsUnavailable(ex))
                {
                    GoDown(ex);
                    FailAll(batch, new StoreUnavailableException($"{_options.Description}: {Explain(ex)}", ex));
                    return;
                }
                TryRollback();
                if (ex is PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure } && attempt < 5)
                {
                    Log.Retrying(_logger, attempt, Explain(ex));
                    continue;
                }
                Log.BatchFailed(_logger, batch.Count, ex);
                foreach (WorkItem item in batch)
                {
                    item.Fail(ex);
                }
                return;
            }
        }
    }

    /// <summary>
    /// One batch's transaction. Asynchronous, although the writer waits for it: Npgsql writes
    /// the second and later statements of a synchronous batch through the thread pool, and .NET
    /// emulates a blocking read on its socket through the socket engine and the pool, each a
    /// thread wake-up per round trip. Awaited, the round trips continue on the socket engine's
    /// thread (inline completions, set by the service) and the writer wakes once per batch, to
    /// answer its decisions.
    /// Nothing in here blocks on I/O: a decision that needs a key the first pass missed is
    /// undone, the key read (awaited), and the decision run again.
    /// </summary>
    private async Task RunBatchOnceAsync(List<WorkItem> batch)
    {
        NpgsqlConnection connection = _connection!;
        BatchView view = _view!;
        _keys.Clear();
        foreach (WorkItem item in batch)
        {
            item.Record(_keys);
        }
        view.Clear();
        view.Loaded(_keys.Triplets, _keys.Clients);

        // Round trip 1: BEGIN, the locks, the rows.
        using (var read = new NpgsqlBatch(connection))
        {
            read.BatchCommands.Add(new NpgsqlBatchCommand("BEGIN"));
            read.BatchCommands.Add(BatchView.LockCommand(_keys.LockIds()));
            read.BatchCommands.Add(BatchView.ReadCommand(_keys.Triplets, _keys.Clients));
            await view.LoadAsync(read).ConfigureAwait(false);
        }

        // The decisions, in memory, in queue order.
        foreach (WorkItem item in batch)
        {
            while (true)
            {
                view.BeginDecision();
                DecisionRun run = item.Run(view);
                if (run == DecisionRun.Done)
                {
                    break;
                }
                view.UndoDecision();
                if (run == DecisionRun.Failed)
                {
                    break;
                }
                await view.FetchMissingAsync().ConfigureAwait(false);
            }
        }

        // Round trip 2: the changed rows and COMMIT. No caller hears anything before it returned.
        using (var write = new NpgsqlBatch(connection))
        {
            view.AddWrites(write);
            write.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
            await write.ExecuteNonQueryAsync().ConfigureAwait(false);
        }
    }

    private void TryRollback()
    {
        try
        {
            using var rollback = new NpgsqlCommand("ROLLBACK", _connection);
            rollback.ExecuteNonQuery();
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException)
        {
            Log.RollbackFailed(_logger, ex);
            GoDown(ex);
        }
    }

    /// <summary>
    /// Deletes expired entries in steps of <see cref="PostgreSqlStoreOptions.MaintenanceStepRows"/>
    /// rows, each its own short transaction on a connection of its own, so decisions never wait
    /// for more than one step's row locks. Only one host cleans at a time: the others find the
    /// advisory lock taken and skip this run (they will try again at their next interval).
    /// </summary>
    public async ValueTask<MaintenanceReport> CleanAsync(MaintenancePolicy policy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(policy);
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (var take = new NpgsqlCommand($"SELECT pg_try_advisory_lock({Schema.LockClass}, {Schema.MaintenanceLock})", connection))
        {
            if (!(bool)(await take.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
            {
                Log.MaintenanceSkipped(_logger, _options.Description);
                return new MaintenanceReport(0, 0, 0, 0) { Skipped = true };
            }
        }
        // The session lock goes with the connection, also if this host dies meanwhile.
        long tripletsBefore = 0, tripletsDeleted = 0, clientsBefore = 0, clientsDeleted = 0;
        foreach (bool triplets in new[] { true, false })
        {
            string expired = triplets
                ? "$3 - t.last_seen > $4 OR (t.last_seen - t.first_seen < $5 AND $3 - t.last_seen > $6)"
                : "$3 - t.last_seen > $4";
            string table = triplets ? "triplets" : "clients";
            // The expiry is checked on the row being deleted (t), not on the scanned copy: a
            // decision on another host that refreshed the row meanwhile keeps it.
            string sql =
                $"WITH scan AS (SELECT key FROM {table} WHERE key > $1 ORDER BY key LIMIT $2), " +
                $"del AS (DELETE FROM {table} t USING scan s WHERE t.key = s.key AND ({expired}) RETURNING 1) " +
                "SELECT (SELECT count(*) FROM scan), (SELECT max(key) FROM scan), (SELECT count(*) FROM del)";
            string after = "";
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                await using var step = new NpgsqlCommand(sql, connection)
                {
                    Parameters =
                    {
                        new() { Value = after },
                        new() { Value = (long)_options.MaintenanceStepRows },
                        new() { Value = policy.Now },
                        new() { Value = policy.MaxAgeSeconds },
                        new() { Value = policy.DelaySeconds },
                        new() { Value = policy.RetryWindowSeconds },
                    },
                };
                await using NpgsqlDataReader reader = await step.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                long scanned = reader.GetInt64(0);
                string? last = await reader.IsDBNullAsync(1, cancellationToken).ConfigureAwait(false) ? null : reader.GetString(1);
                long deleted = reader.GetInt64(2);
                if (triplets)
                {
                    tripletsBefore += scanned;
                    tripletsDeleted += deleted;
                }
                else
                {
                    clientsBefore += scanned;
                    clientsDeleted += deleted;
                }
                if (scanned < _options.MaintenanceStepRows || last is null)
                {
                    break;
                }
                after = last;
            }
        }
        await using (var release = new NpgsqlCommand($"SELECT pg_advisory_unlock({Schema.LockClass}, {Schema.MaintenanceLock})", connection))
        {
            await release.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        return new MaintenanceReport(tripletsBefore, tripletsBefore - tripletsDeleted, clientsBefore, clientsBefore - clientsDeleted);
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Finishes every queued decision, then closes the connection and releases postgrey.lock.</summary>
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
        if (_writer.IsAlive)
        {
            _writer.Join();
        }
        _watchdog.Dispose();
        _connection?.Dispose();
        _dataSource.Dispose();
        _lock?.Dispose();
        Log.Closed(_logger, _options.Description);
    }

    private enum DecisionRun
    {
        Done,
        Failed,
        KeyMissing,
    }

    private abstract class WorkItem(long deadline)
    {
        public long Deadline { get; } = deadline;

        /// <summary>Answered or failed: not to be answered again.</summary>
        public abstract bool IsFinished { get; }

        /// <summary>The first pass: which keys would it touch?</summary>
        public abstract void Record(KeyRecorder keys);

        /// <summary>The real run: done, failed (the decision threw: it fails alone), or stopped
        /// at a key the first pass missed (to be read, then the decision run again).</summary>
        public abstract DecisionRun Run(BatchView view);

        public abstract void Complete();

        public abstract void Fail(Exception ex);
    }

    private sealed class DecisionItem<TState, TResult>(TState state, Func<IGreylistTransaction, TState, TResult> decide, long deadline, bool continueOnWriter) : WorkItem(deadline)
    {
        private readonly TaskCompletionSource<TResult> _done = new(
            continueOnWriter ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
        private TResult? _result;
        private Exception? _error;

        public Task<TResult> Task => _done.Task;

        public override bool IsFinished => _done.Task.IsCompleted;

        public override void Record(KeyRecorder keys)
        {
            try
            {
                decide(keys, state);
            }
#pragma warning disable CA1031 // the real run reports it; here only the keys matter
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }

        public override DecisionRun Run(BatchView view)
        {
            try
            {
                _result = decide(view, state);
                _error = null;
                return DecisionRun.Done;
            }
            catch (KeyNotLoadedException)
            {
                return DecisionRun.KeyMissing;
            }
            catch (Exception ex) when (ex is not NpgsqlException)
            {
                _error = ex;
                return DecisionRun.Failed;
            }
        }

        public override void Complete()
        {
            if (_error is not null)
            {
                _done.TrySetException(_error);
            }
            else
            {
                _done.TrySetResult(_result!);
            }
        }

        public override void Fail(Exception ex) => _done.TrySetException(ex);
    }

    private static partial class Log
    {
        [LoggerMessage(4101, LogLevel.Information, "database {Database} open (PostgreSQL {Version}, schema version {Schema})", EventName = "PgStoreOpened")]
        public static partial void Opened(ILogger logger, string database, string version, int schema);

        [LoggerMessage(4102, LogLevel.Information, "database {Database} closed", EventName = "PgStoreClosed")]
        public static partial void Closed(ILogger logger, string database);

        [LoggerMessage(4103, LogLevel.Error, "database {Database} unreachable: {Reason}; answering DUNNO until it is back (trying again every {Seconds} s at most)", EventName = "PgUnreachable")]
        public static partial void Unreachable(ILogger logger, string database, string reason, double seconds);

        [LoggerMessage(4104, LogLevel.Warning, "database {Database} reachable again after {Seconds:0.0} s; {Count} requests were answered DUNNO meanwhile", EventName = "PgReconnected")]
        public static partial void Reconnected(ILogger logger, string database, double seconds, long count);

        [LoggerMessage(4105, LogLevel.Error, "database {Database} did not answer within {Milliseconds} ms; answering DUNNO while it does not", EventName = "PgSlow")]
        public static partial void Slow(ILogger logger, string database, long milliseconds);

        [LoggerMessage(4106, LogLevel.Warning, "database {Database} answers again", EventName = "PgAnsweringAgain")]
        public static partial void AnsweringAgain(ILogger logger, string database);

        [LoggerMessage(4107, LogLevel.Warning, "cleaning skipped: another host sharing {Database} is cleaning it", EventName = "PgMaintenanceSkipped")]
        public static partial void MaintenanceSkipped(ILogger logger, string database);

        [LoggerMessage(4108, LogLevel.Error, "transaction of {Count} decisions failed; answering them DUNNO", EventName = "PgBatchFailed")]
        public static partial void BatchFailed(ILogger logger, int count, Exception exception);

        [LoggerMessage(4109, LogLevel.Error, "rollback failed; reconnecting", EventName = "PgRollbackFailed")]
        public static partial void RollbackFailed(ILogger logger, Exception exception);

        [LoggerMessage(4110, LogLevel.Debug, "transaction attempt {Attempt} failed ({Reason}); running it again", EventName = "PgRetrying")]
        public static partial void Retrying(ILogger logger, int attempt, string reason);
    }
}

/// <summary>The store cannot start: what the admin must fix is in the message.</summary>
public sealed class PostgreSqlStoreException : Exception
{
    public PostgreSqlStoreException()
    {
    }

    public PostgreSqlStoreException(string message)
        : base(message)
    {
    }

    public PostgreSqlStoreException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
