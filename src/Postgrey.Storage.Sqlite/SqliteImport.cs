using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.Sqlite;

/// <summary>A triplet as stored: postgrey's key, first and last seen (unix seconds).</summary>
public readonly record struct TripletRow(string Key, long FirstSeen, long LastSeen);

/// <summary>An auto-whitelisted client as stored: its key, the passed-triplet count, last seen.</summary>
public readonly record struct ClientRow(string Key, long Count, long LastSeen);

/// <summary>What an import wrote: rows added or overwritten, and rows left as they were.</summary>
public sealed record ImportCounts(long Triplets, long Clients, long Kept);

/// <summary>
/// Bulk moves into and out of the store's database, for <c>postgrey import</c> and
/// <c>postgrey export</c>. The import runs on a connection of its own while holding
/// postgrey.lock, so never beside a running service, and writes everything in one transaction:
/// a failure leaves the database as it was.
/// </summary>
public static class SqliteImport
{
    /// <summary>
    /// Takes postgrey.lock in <paramref name="options"/>' directory (throws
    /// <see cref="StoreLockedException"/> when the service or another import holds it), creates
    /// or migrates the database as the store would, and upserts every row in one transaction. A key
    /// already present keeps its row unless <paramref name="replace"/>; a row equal to the stored
    /// one is kept either way, so that an import run twice changes nothing.
    /// </summary>
    public static ImportCounts Upsert(SqliteStoreOptions options, IEnumerable<TripletRow> triplets, IEnumerable<ClientRow> clients, bool replace)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(triplets);
        ArgumentNullException.ThrowIfNull(clients);
        Directory.CreateDirectory(options.Directory);
        using FileStream lockFile = LockFile.Acquire(options.LockPath);

        bool isNew = !File.Exists(options.DatabasePath) || new FileInfo(options.DatabasePath).Length == 0;
        SqliteGreylistStore.CreatePrivateFile(options.DatabasePath);
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = options.DatabasePath,
            Mode = SqliteOpenMode.ReadWrite,
            Pooling = false,
            DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds),
        }.ToString());
        connection.Open();
        if (isNew)
        {
            // As SqliteGreylistStore.Open: the page size must be set before the first table.
            Schema.Execute(connection, $"PRAGMA page_size = {Schema.PageSize}");
        }
        Schema.Execute(connection, $"PRAGMA busy_timeout = {(int)options.BusyTimeout.TotalMilliseconds}");
        Schema.Execute(connection, "PRAGMA journal_mode = WAL");
        Schema.Execute(connection, "PRAGMA synchronous = FULL"); // one commit: make it durable
        Schema.Migrate(connection);

        // The update only where a value differs: SQLite counts an UPDATE that writes the same
        // values as a change, and the second run of an import must report nothing imported.
        string tripletConflict = replace
            ? "DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen WHERE first_seen <> excluded.first_seen OR last_seen <> excluded.last_seen"
            : "DO NOTHING";
        string clientConflict = replace
            ? "DO UPDATE SET count = excluded.count, last_seen = excluded.last_seen WHERE count <> excluded.count OR last_seen <> excluded.last_seen"
            : "DO NOTHING";

        using SqliteTransaction tx = connection.BeginTransaction();
        var (importedTriplets, keptTriplets) = Upsert(tx,
            $"INSERT INTO triplets (key, first_seen, last_seen) VALUES ($k, $a, $b) ON CONFLICT (key) {tripletConflict}",
            triplets.Select(r => (r.Key, r.FirstSeen, r.LastSeen)));
        var (importedClients, keptClients) = Upsert(tx,
            $"INSERT INTO clients (key, count, last_seen) VALUES ($k, $a, $b) ON CONFLICT (key) {clientConflict}",
            clients.Select(r => (r.Key, r.Count, r.LastSeen)));
        tx.Commit();
        return new ImportCounts(importedTriplets, importedClients, keptTriplets + keptClients);
    }

    /// <summary>Runs the prepared <paramref name="sql"/> once a row; counts the rows it wrote and
    /// those the ON CONFLICT clause left as they were.</summary>
    private static (long Written, long Kept) Upsert(SqliteTransaction tx, string sql, IEnumerable<(string Key, long A, long B)> rows)
    {
        using SqliteCommand insert = tx.Connection!.CreateCommand();
        insert.Transaction = tx;
        insert.CommandText = sql;
        var (k, a, b) = (insert.Parameters.Add("$k", SqliteType.Text), insert.Parameters.Add("$a", SqliteType.Integer), insert.Parameters.Add("$b", SqliteType.Integer));
        insert.Prepare();
        long written = 0, kept = 0;
        foreach (var row in rows)
        {
            (k.Value, a.Value, b.Value) = (row.Key, row.A, row.B);
            if (insert.ExecuteNonQuery() > 0)
            {
                written++;
            }
            else
            {
                kept++;
            }
        }
        return (written, kept);
    }

    /// <summary>Every triplet of the database in <paramref name="options"/>' directory, in key
    /// order, read in one transaction: consistent, and safe beside a running service (WAL readers
    /// never block its writer).</summary>
    public static IReadOnlyList<TripletRow> ReadTriplets(SqliteStoreOptions options)
    {
        using var snapshot = SqliteSnapshot.Open(options);
        return [.. snapshot.Triplets()];
    }

    /// <summary>Every auto-whitelisted client, as <see cref="ReadTriplets"/>.</summary>
    public static IReadOnlyList<ClientRow> ReadClients(SqliteStoreOptions options)
    {
        using var snapshot = SqliteSnapshot.Open(options);
        return [.. snapshot.Clients()];
    }
}
