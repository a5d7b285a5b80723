using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// The database a read-only tool (<c>list</c>, <c>stats</c>, <c>explain</c>) reads, in one
/// snapshot: the SQLite store of --dbdir or the shared PostgreSQL store of --db. The tools format
/// what it gives and do not know which it is, so that both stores print the same for the same rows.
/// </summary>
internal abstract class ToolDatabase : IDisposable
{
    /// <summary>The database as messages name it (the file, or the URI without its password).</summary>
    public abstract string Name { get; }

    /// <summary>Every triplet, one row at a time, in key byte order unless
    /// <paramref name="inKeyOrder"/> is false (then in any order: PostgreSQL need not sort).</summary>
    public abstract IEnumerable<TripletRow> Triplets(bool inKeyOrder = true);

    /// <summary>Every auto-whitelist counter, as <see cref="Triplets"/>.</summary>
    public abstract IEnumerable<ClientRow> Clients(bool inKeyOrder = true);

    public abstract TripletRecord? FindTriplet(string key);

    public abstract ClientRecord? FindClient(string key);

    public abstract void Dispose();

    /// <summary>Opens the snapshot of <paramref name="db"/> if given, else of the SQLite store in <paramref name="dbdir"/>.</summary>
    public static ToolDatabase Open(string dbdir, (string ConnectionString, string Description)? db) =>
        db is { } shared ? new Shared(PostgreSqlSnapshot.Open(shared.ConnectionString), shared.Description) : new Local(SqliteSnapshot.Open(new SqliteStoreOptions { Directory = dbdir }), dbdir);

    /// <summary>The exceptions a tool turns into its one line, from either store.</summary>
    public static bool IsReadError(Exception ex) =>
        ex is SqliteException || PostgreSqlAdmin.IsDatabaseError(ex);

    /// <summary>The line a read failure prints, as the other tools word it for each store.</summary>
    public static string ReadFailure(string dbdir, (string ConnectionString, string Description)? db, Exception ex) =>
        db is { } shared
            ? $"can't read database {shared.Description}: {PostgreSqlAdmin.Explain(ex)}"
            : $"can't read {new SqliteStoreOptions { Directory = dbdir }.DatabasePath}: {ex.Message}";

    private sealed class Local(SqliteSnapshot snapshot, string dbdir) : ToolDatabase
    {
        public override string Name { get; } = new SqliteStoreOptions { Directory = dbdir }.DatabasePath;

        // In key order always: SQLite reads the primary key's index, no sort.
        public override IEnumerable<TripletRow> Triplets(bool inKeyOrder = true) => snapshot.Triplets();

        public override IEnumerable<ClientRow> Clients(bool inKeyOrder = true) => snapshot.Clients();

        public override TripletRecord? FindTriplet(string key) => snapshot.FindTriplet(key);

        public override ClientRecord? FindClient(string key) => snapshot.FindClient(key);

        public override void Dispose() => snapshot.Dispose();
    }

    private sealed class Shared(PostgreSqlSnapshot snapshot, string description) : ToolDatabase
    {
        public override string Name => description;

        public override IEnumerable<TripletRow> Triplets(bool inKeyOrder = true) =>
            snapshot.Triplets(inKeyOrder).Select(t => new TripletRow(t.Key, t.Record.FirstSeen, t.Record.LastSeen));

        public override IEnumerable<ClientRow> Clients(bool inKeyOrder = true) =>
            snapshot.Clients(inKeyOrder).Select(c => new ClientRow(c.Key, c.Record.Count, c.Record.LastSeen));

        public override TripletRecord? FindTriplet(string key) => snapshot.FindTriplet(key);

        public override ClientRecord? FindClient(string key) => snapshot.FindClient(key);

        public override void Dispose() => snapshot.Dispose();
    }
}
