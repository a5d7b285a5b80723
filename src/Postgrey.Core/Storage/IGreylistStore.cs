namespace Postgrey.Core.Storage;

/// <summary>
/// Where triplets and auto-whitelist counters live. The engine's decision is a pure function of
/// the stored state and the clock; the store runs it inside one transaction and commits before
/// the returned task completes, so an answer never leaves before its update is durable. Any
/// backend that can run such a read-modify-write atomically (SQLite here, a shared SQL server
/// for several MX hosts later) can serve the engine unchanged.
/// </summary>
public interface IGreylistStore
{
    /// <summary>
    /// Runs <paramref name="decide"/> in a transaction of its own (or inside a group commit with
    /// others, each isolated from the others' failures) and returns its result once committed.
    /// Decisions are linearizable: two calls never see the same state and both write.
    /// The returned task completes within a bound of the store's own (a few seconds, well inside
    /// Postfix's policy time-out), failing with <see cref="TimeoutException"/> past it, whatever
    /// the database is stuck in (another process's lock, a hung disk or server): the engine then
    /// answers DUNNO. A store whose commit completes later (a database server) keeps that bound
    /// with <paramref name="cancellationToken"/> or a time-out of its own.
    /// </summary>
    ValueTask<TResult> ExecuteAsync<TState, TResult>(
        TState state,
        Func<IGreylistTransaction, TState, TResult> decide,
        CancellationToken cancellationToken);

    /// <summary>Deletes expired entries in small steps so that decisions never wait long.</summary>
    ValueTask<MaintenanceReport> CleanAsync(MaintenancePolicy policy, CancellationToken cancellationToken);
}

/// <summary>The records one decision may read and write. Valid only inside its transaction.</summary>
public interface IGreylistTransaction
{
    TripletRecord? FindTriplet(string key);

    void SaveTriplet(string key, TripletRecord record);

    ClientRecord? FindClient(string key);

    void SaveClient(string key, ClientRecord record);
}

/// <summary>First and last time (unix seconds) a triplet was seen, as postgrey stores "first,last".</summary>
public readonly record struct TripletRecord(long FirstSeen, long LastSeen);

/// <summary>Auto-whitelist counter of one client address, as postgrey stores "count,last".</summary>
public readonly record struct ClientRecord(long Count, long LastSeen);

/// <summary>What maintenance deletes, from postgrey's <c>do_maintenance</c>. All in unix seconds.</summary>
public sealed record MaintenancePolicy(long Now, long MaxAgeSeconds, long DelaySeconds, long RetryWindowSeconds)
{
    /// <summary>Last seen past max-age, or never passed and last seen past the retry window.</summary>
    public bool IsTripletExpired(TripletRecord record) =>
        Now - record.LastSeen > MaxAgeSeconds
        || (record.LastSeen - record.FirstSeen < DelaySeconds && Now - record.LastSeen > RetryWindowSeconds);

    public bool IsClientExpired(ClientRecord record) => Now - record.LastSeen > MaxAgeSeconds;
}

/// <summary>Entry counts before and after one maintenance run, for postgrey's log lines.</summary>
public sealed record MaintenanceReport(long TripletsBefore, long TripletsAfter, long ClientsBefore, long ClientsAfter)
{
    /// <summary>A store shared by several hosts: another instance was cleaning, this run did nothing.</summary>
    public bool Skipped { get; init; }
}
