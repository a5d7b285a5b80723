namespace Postgrey.Storage.Sqlite;

/// <summary>Where and how the SQLite store keeps its data.</summary>
public sealed record SqliteStoreOptions
{
    public const string DatabaseFileName = "postgrey.sqlite3";
    public const string LockFileName = "postgrey.lock";

    /// <summary>--dbdir: holds the database and postgrey.lock.</summary>
    public required string Directory { get; init; }

    /// <summary>
    /// true: every commit is fsync'ed (PRAGMA synchronous=FULL), surviving power loss.
    /// false (default): WAL with synchronous=NORMAL; a commit is in the WAL before the answer
    /// leaves, so a killed process loses nothing; a power cut may lose the last commits.
    /// </summary>
    public bool SyncEveryCommit { get; init; }

    /// <summary>Most decisions committed together by one group commit.</summary>
    public int MaxBatchSize { get; init; } = 512;

    /// <summary>Rows examined per maintenance step; a step holds the writer for a few milliseconds.</summary>
    public int MaintenanceStepRows { get; init; } = 2000;

    /// <summary>How long a write waits for another process holding the database (sqlite3 CLI, backup).</summary>
    public TimeSpan BusyTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The longest a decision waits on the database, queueing included: past it, it fails with a
    /// <see cref="TimeoutException"/> (answered DUNNO), whatever the database is stuck in. Well
    /// inside Postfix's smtpd_policy_service_timeout (100 s), so that Postfix never gives up on us.
    /// </summary>
    public TimeSpan DecisionTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The longest the integrity check (PRAGMA quick_check) at start may take; a larger
    /// database is checked that long and then opened unchecked, with a warning. Measured: 1.8-2 s
    /// for 1,000,000 triplets (100 MB) on the project's 2-core machine; mail waits while we start.
    /// </summary>
    public TimeSpan IntegrityCheckTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// SQLite page cache of the writer connection, in KiB. Small on purpose: at every COMMIT
    /// SQLite walks the cache's whole hash table (pager_end_transaction, pcache1TruncateUnsafe),
    /// which with 16 MiB took 24% of the writer thread under the all-new load; pages that miss
    /// come from the OS page cache.
    /// </summary>
    public int CacheKiB { get; init; } = 2 * 1024;

    /// <summary>How often the WAL is copied into the database, off the writer thread.</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// WAL size past which the checkpointer waits for a pause between two group commits to
    /// copy the rest and start the WAL over. Under sustained writes a PASSIVE checkpoint never
    /// catches up, and the WAL (and its index, which every lookup walks) would grow without end.
    /// </summary>
    public long WalRestartBytes { get; init; } = 32L * 1024 * 1024;

    /// <summary>
    /// true: what awaits a decision continues on the writer thread, right after its COMMIT.
    /// Only for a caller whose continuation hands the result off at once (the epoll transport
    /// posts the connection to its loop, which then produces the answer and the log line): it
    /// saves a thread-pool wake-up per decision, but anything slow there would stall every
    /// decision behind it. false: continuations run on the thread pool.
    /// </summary>
    public bool ContinueOnWriterThread { get; init; }

    public string DatabasePath => Path.Combine(Directory, DatabaseFileName);

    public string LockPath => Path.Combine(Directory, LockFileName);
}

/// <summary>The database file is damaged (its integrity check failed at start).</summary>
public sealed class StoreDamagedException(string path, string problem, Exception? inner)
    : IOException(
        $"it is damaged ({problem}). Restore it from a backup; or, to start afresh with an empty database (every triplet is then new), "
        + $"move it away with any -wal and -shm file beside it: mv {path} {path}.damaged",
        inner)
{
    public string DatabasePath { get; } = path;
}
