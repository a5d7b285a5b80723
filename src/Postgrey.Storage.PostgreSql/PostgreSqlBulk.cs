using Npgsql;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.PostgreSql;

/// <summary>What a bulk write did: rows added or overwritten, and rows left as they were.</summary>
public sealed record BulkCounts(long Triplets, long Clients, long Kept);

/// <summary>Every row of the shared database, read in one snapshot.</summary>
public sealed record BulkRows(
    IReadOnlyList<KeyValuePair<string, TripletRecord>> Triplets,
    IReadOnlyList<KeyValuePair<string, ClientRecord>> Clients);

/// <summary>
/// Bulk moves into and out of the shared database, for <c>postgrey db copy</c>, <c>postgrey
/// import --db</c> and <c>postgrey export --db</c>. Writes go in one transaction, in chunks of
/// <see cref="ChunkRows"/> rows, each one upsert over <c>unnest</c> arrays (as the store's batches
/// write): a failure leaves the database as it was.
/// </summary>
public static class PostgreSqlBulk
{
    /// <summary>Rows per statement: three arrays of this many elements, a few hundred KB.</summary>
    public const int ChunkRows = 10_000;

    /// <summary>
    /// Reads every triplet and client in one REPEATABLE READ snapshot (consistent, and safe beside
    /// running services), keys in byte order (<c>COLLATE "C"</c>, as SQLite and BerkeleyDB sort).
    /// </summary>
    public static BulkRows Read(string connectionString)
    {
        using NpgsqlDataSource dataSource = PostgreSqlAdmin.DataSource(connectionString);
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction tx = connection.BeginTransaction(System.Data.IsolationLevel.RepeatableRead);
        int version = Schema.ReadVersion(connection);
        if (version != Schema.CurrentVersion)
        {
            throw new InvalidOperationException(version == 0
                ? "no postgrey schema there (no table schema_version)"
                : $"the database has schema version {version}; this program reads version {Schema.CurrentVersion}");
        }
        var triplets = new List<KeyValuePair<string, TripletRecord>>();
        var clients = new List<KeyValuePair<string, ClientRecord>>();
        using (var read = new NpgsqlCommand("SELECT key, first_seen, last_seen FROM triplets ORDER BY key COLLATE \"C\"", connection))
        using (NpgsqlDataReader reader = read.ExecuteReader())
        {
            while (reader.Read())
            {
                triplets.Add(new(reader.GetString(0), new TripletRecord(reader.GetInt64(1), reader.GetInt64(2))));
            }
        }
        using (var read = new NpgsqlCommand("SELECT key, count, last_seen FROM clients ORDER BY key COLLATE \"C\"", connection))
        using (NpgsqlDataReader reader = read.ExecuteReader())
        {
            while (reader.Read())
            {
                clients.Add(new(reader.GetString(0), new ClientRecord(reader.GetInt64(1), reader.GetInt64(2))));
            }
        }
        tx.Commit();
        return new BulkRows(triplets, clients);
    }

    /// <summary>
    /// Creates or migrates the schema if the role may (else the error says to run <c>postgrey db
    /// init</c>), and upserts every row, all in one transaction. A key already present keeps its
    /// row unless <paramref name="replace"/>; a row equal to the stored one is kept either way, so
    /// that a copy run twice changes nothing.
    /// </summary>
    public static BulkCounts Upsert(
        string connectionString,
        IEnumerable<KeyValuePair<string, TripletRecord>> triplets,
        IEnumerable<KeyValuePair<string, ClientRecord>> clients,
        bool replace)
    {
        ArgumentNullException.ThrowIfNull(triplets);
        ArgumentNullException.ThrowIfNull(clients);
        using NpgsqlDataSource dataSource = PostgreSqlAdmin.DataSource(connectionString);
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction tx = connection.BeginTransaction();
        if (Schema.ReadVersion(connection) != Schema.CurrentVersion)
        {
            Schema.MigrateInTransaction(connection);
        }
        var (writtenTriplets, keptTriplets) = Upsert(connection, "triplets", "first_seen", replace, triplets.Select(p => (p.Key, p.Value.FirstSeen, p.Value.LastSeen)));
        var (writtenClients, keptClients) = Upsert(connection, "clients", "count", replace, clients.Select(p => (p.Key, p.Value.Count, p.Value.LastSeen)));
        tx.Commit();
        return new BulkCounts(writtenTriplets, writtenClients, keptTriplets + keptClients);
    }

    private static (long Written, long Kept) Upsert(NpgsqlConnection connection, string table, string first, bool replace, IEnumerable<(string Key, long A, long B)> rows)
    {
        // The update only where a value differs, so that the count says what changed.
        string conflict = replace
            ? $"DO UPDATE SET {first} = excluded.{first}, last_seen = excluded.last_seen " +
              $"WHERE {table}.{first} <> excluded.{first} OR {table}.last_seen <> excluded.last_seen"
            : "DO NOTHING";
        string sql = $"INSERT INTO {table} (key, {first}, last_seen) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ON CONFLICT (key) {conflict}";
        long written = 0, total = 0;
        var keys = new List<string>(ChunkRows);
        var a = new List<long>(ChunkRows);
        var b = new List<long>(ChunkRows);
        void Flush()
        {
            using var insert = new NpgsqlCommand(sql, connection)
            {
                Parameters = { new() { Value = keys.ToArray() }, new() { Value = a.ToArray() }, new() { Value = b.ToArray() } },
            };
            written += insert.ExecuteNonQuery();
            total += keys.Count;
            keys.Clear();
            a.Clear();
            b.Clear();
        }
        foreach (var row in rows)
        {
            keys.Add(row.Key);
            a.Add(row.A);
            b.Add(row.B);
            if (keys.Count == ChunkRows)
            {
                Flush();
            }
        }
        if (keys.Count > 0)
        {
            Flush();
        }
        return (written, total - written);
    }

    /// <summary>
    /// How many postgrey services are connected to the database now (pg_stat_activity, by the
    /// application name the store sets): a copy that overwrites rows must not run beside them.
    /// </summary>
    public static long ServicesConnected(string connectionString)
    {
        using NpgsqlDataSource dataSource = PostgreSqlAdmin.DataSource(connectionString);
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using var count = new NpgsqlCommand(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'postgrey' AND pid <> pg_backend_pid()",
            connection);
        return (long)count.ExecuteScalar()!;
    }
}
