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
