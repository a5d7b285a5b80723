namespace Postgrey.Storage.PostgreSql;

/// <summary>Where the shared store is and how long a decision may wait for it.</summary>
public sealed record PostgreSqlStoreOptions
{
    /// <summary>Npgsql's connection string (from <see cref="PostgreSqlConnectionString.Parse"/>), password included if any.</summary>
    public required string ConnectionString { get; init; }

    /// <summary>The database as it is named in logs and messages, without the password.</summary>
    public required string Description { get; init; }

    /// <summary>
    /// --db-timeout: the longest a request waits for its decision. Past it the answer is DUNNO,
    /// so that a hung server cannot hold Postfix (whose policy time-out is 100 s and which
    /// defers the mail when it expires). Also the connect time-out.
    /// </summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Most decisions in one transaction (two network round trips).</summary>
    public int MaxBatchSize { get; init; } = 512;

    /// <summary>
    /// Under load (the previous batch held at least <see cref="LoadedBatch"/> decisions), a batch
    /// waits up to <see cref="BatchWait"/> for this many to be queued before it starts. A batch
    /// pays its round trips, BEGIN and COMMIT whatever its size, so small batches waste the CPU
    /// that a busy MX lacks. With 100 connections split over two instances, batches of 26 grew
    /// to 39-41 and the service's CPU per decision fell by 2-3 µs, PostgreSQL's by 3-4 µs; one
    /// instance (batches of about 48) rarely waits (docs/performance.md, session 9).
    /// </summary>
    public int BatchTarget { get; init; } = 32;

    /// <summary>The longest a batch waits for <see cref="BatchTarget"/> (zero: never). Far below
    /// anything Postfix notices; rounded up to whole milliseconds.</summary>
    public TimeSpan BatchWait { get; init; } = TimeSpan.FromMilliseconds(1);

    /// <summary>Below this previous batch size the load is light: a batch starts at once.</summary>
    public int LoadedBatch { get; init; } = 8;

    /// <summary>Rows examined per maintenance transaction.</summary>
    public int MaintenanceStepRows { get; init; } = 2000;

    /// <summary>First and longest wait between two connection attempts while the server is down.</summary>
    public TimeSpan ReconnectMin { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan ReconnectMax { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// true: what awaits a decision continues on the writer thread, right after its COMMIT (as
    /// <c>SqliteStoreOptions.ContinueOnWriterThread</c>). Only for a caller whose continuation
    /// hands the result off at once (the epoll transport posts the connection to its loop): it
    /// saves a thread-pool wake-up per decision, but anything slow there would stall every
    /// decision behind it. false: continuations run on the thread pool.
    /// </summary>
    public bool ContinueOnWriterThread { get; init; }
}
