using Npgsql;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.PostgreSql;

/// <summary>
/// The shared database read-only, in one REPEATABLE READ, READ ONLY transaction (a consistent
/// snapshot), for the admin's tools (<c>postgrey list</c>, <c>stats</c>, <c>explain</c>): the
/// PostgreSQL side of the SQLite store's SqliteSnapshot. Safe beside running services: its reads
/// take only ACCESS SHARE locks, which no insert, update or delete waits for, and the server
/// refuses any write in it. Rows stream one at a time, keys in byte order (<c>COLLATE "C"</c>,
/// as SQLite sorts), so that both stores list the same rows in the same order.
/// </summary>
public sealed class PostgreSqlSnapshot : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlTransaction _transaction;

    private PostgreSqlSnapshot(NpgsqlDataSource dataSource, NpgsqlConnection connection, NpgsqlTransaction transaction)
    {
        _dataSource = dataSource;
        _connection = connection;
        _transaction = transaction;
    }

    /// <summary>Connects and opens the snapshot. Throws what <see cref="PostgreSqlAdmin.IsDatabaseError"/>
    /// accepts: <see cref="NpgsqlException"/> for the server or the network,
    /// <see cref="InvalidOperationException"/> for no schema or another version.</summary>
    public static PostgreSqlSnapshot Open(string connectionString)
    {
        NpgsqlDataSource dataSource = PostgreSqlAdmin.DataSource(connectionString);
        NpgsqlConnection? connection = null;
        try
        {
            connection = dataSource.OpenConnection();
            NpgsqlTransaction transaction = connection.BeginTransaction(System.Data.IsolationLevel.RepeatableRead);
            // Before the first query, which fixes the snapshot.
            Schema.Execute(connection, "SET TRANSACTION READ ONLY");
            int version = Schema.ReadVersion(connection);
            if (version != Schema.CurrentVersion)
            {
                throw new InvalidOperationException(version == 0
                    ? "no postgrey schema there (no table schema_version)"
                    : $"the database has schema version {version}; this program reads version {Schema.CurrentVersion}");
            }
            return new PostgreSqlSnapshot(dataSource, connection, transaction);
        }
        catch
        {
            connection?.Dispose();
            dataSource.Dispose();
            throw;
        }
    }

    public TripletRecord? FindTriplet(string key)
    {
        foreach (var (_, a, b) in Rows("SELECT key, first_seen, last_seen FROM triplets WHERE key = $1", key))
        {
            return new TripletRecord(a, b);
        }
        return null;
    }

    public ClientRecord? FindClient(string key)
    {
        foreach (var (_, a, b) in Rows("SELECT key, count, last_seen FROM clients WHERE key = $1", key))
        {
            return new ClientRecord(a, b);
        }
        return null;
    }

    /// <summary>Every triplet, one row at a time: in key byte order, or as stored when
    /// <paramref name="inKeyOrder"/> is false (the sort is most of the time of a million rows).</summary>
    public IEnumerable<(string Key, TripletRecord Record)> Triplets(bool inKeyOrder = true) =>
        Rows("SELECT key, first_seen, last_seen FROM triplets" + (inKeyOrder ? " ORDER BY key COLLATE \"C\"" : ""), null).Select(r => (r.Key, new TripletRecord(r.A, r.B)));

    /// <summary>Every auto-whitelist counter, as <see cref="Triplets"/>.</summary>
    public IEnumerable<(string Key, ClientRecord Record)> Clients(bool inKeyOrder = true) =>
        Rows("SELECT key, count, last_seen FROM clients" + (inKeyOrder ? " ORDER BY key COLLATE \"C\"" : ""), null).Select(r => (r.Key, new ClientRecord(r.A, r.B)));

    private IEnumerable<(string Key, long A, long B)> Rows(string sql, string? key)
    {
        using var command = new NpgsqlCommand(sql, _connection, _transaction);
        if (key is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = key });
        }
        using NpgsqlDataReader reader = command.ExecuteReader();
        while (reader.Read())
        {
            yield return (reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2));
        }
    }

    public void Dispose()
    {
        _transaction.Dispose(); // a rollback: it only read
        _connection.Dispose();
        _dataSource.Dispose();
    }
}
