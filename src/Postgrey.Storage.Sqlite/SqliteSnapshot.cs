using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// The store's database read-only, in one read transaction (a consistent snapshot), for the
/// admin's tools (<c>postgrey list</c>, <c>postgrey explain</c>, <c>postgrey export</c>). Safe beside
/// the running service: a WAL reader never blocks its writer, and it takes no postgrey.lock.
/// It never writes the database file.
/// </summary>
public sealed class SqliteSnapshot : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly SqliteTransaction _transaction;

    private SqliteSnapshot(SqliteConnection connection, SqliteTransaction transaction)
    {
        _connection = connection;
        _transaction = transaction;
    }

    /// <summary>Opens the database of <paramref name="options"/>' directory. Throws
    /// <see cref="FileNotFoundException"/> when there is none, <see cref="InvalidOperationException"/>
    /// for another schema version, <see cref="SqliteException"/> for a file SQLite cannot read.</summary>
    public static SqliteSnapshot Open(SqliteStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!File.Exists(options.DatabasePath))
        {
            throw new FileNotFoundException($"no database at {options.DatabasePath}", options.DatabasePath);
        }
        // Without a -wal file no service has the database open (it removes the file when it
        // closes it): read the file as it is, immutable, because a read-only connection would
        // otherwise create -wal and -shm files, owned by whoever runs the tool (root), which the
        // service's user could then not open. The service may start meanwhile: it does not write
        // the main file before a checkpoint, seconds later.
        string source = File.Exists(options.DatabasePath + "-wal")
            ? options.DatabasePath
            : "file:" + options.DatabasePath.Replace("%", "%25", StringComparison.Ordinal).Replace("?", "%3f", StringComparison.Ordinal).Replace("#", "%23", StringComparison.Ordinal) + "?immutable=1";
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = source,
            Mode = SqliteOpenMode.ReadOnly,
            Pooling = false,
            DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds),
        }.ToString());
        try
        {
            connection.Open();
            long version = Schema.Scalar(connection, "SELECT coalesce(max(version), 0) FROM schema_version");
            if (version != Schema.CurrentVersion)
            {
                throw new InvalidOperationException($"{options.DatabasePath} has schema version {version}; this program reads version {Schema.CurrentVersion}");
            }
            return new SqliteSnapshot(connection, connection.BeginTransaction(deferred: true));
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public TripletRecord? FindTriplet(string key)
    {
        foreach (TripletRow row in Triplets("SELECT key, first_seen, last_seen FROM triplets WHERE key = $key", key))
        {
            return new TripletRecord(row.FirstSeen, row.LastSeen);
        }
        return null;
    }

    public ClientRecord? FindClient(string key)
    {
        foreach (ClientRow row in Clients("SELECT key, count, last_seen FROM clients WHERE key = $key", key))
        {
            return new ClientRecord(row.Count, row.LastSeen);
        }
        return null;
    }

    /// <summary>Every triplet, in key order, one row at a time.</summary>
    public IEnumerable<TripletRow> Triplets() => Triplets("SELECT key, first_seen, last_seen FROM triplets ORDER BY key", null);

    /// <summary>Every auto-whitelist counter, in key order, one row at a time.</summary>
    public IEnumerable<ClientRow> Clients() => Clients("SELECT key, count, last_seen FROM clients ORDER BY key", null);

    private IEnumerable<TripletRow> Triplets(string sql, string? key) =>
        Rows(sql, key, r => new TripletRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2)));

    private IEnumerable<ClientRow> Clients(string sql, string? key) =>
        Rows(sql, key, r => new ClientRow(r.GetString(0), r.GetInt64(1), r.GetInt64(2)));

    private IEnumerable<T> Rows<T>(string sql, string? key, Func<SqliteDataReader, T> row)
    {
        using SqliteCommand command = _connection.CreateCommand();
        command.Transaction = _transaction;
        command.CommandText = sql;
        if (key is not null)
        {
            command.Parameters.AddWithValue("$key", key);
        }
        using SqliteDataReader reader = command.ExecuteReader();
        while (reader.Read())
        {
            yield return row(reader);
        }
    }

    public void Dispose()
    {
        _transaction.Dispose(); // a rollback of nothing: it only read
        _connection.Dispose();
    }
}
