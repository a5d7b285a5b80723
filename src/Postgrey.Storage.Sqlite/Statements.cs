using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.Sqlite;

/// <summary>The writer connection's prepared statements; also the transaction view handed to
/// decisions. Used by the writer thread only.</summary>
internal sealed class Statements : IGreylistTransaction, IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly List<SqliteCommand> _all = [];
    private readonly SqliteCommand _findTriplet;
    private readonly SqliteCommand _saveTriplet;
    private readonly SqliteCommand _findClient;
    private readonly SqliteCommand _saveClient;
    private readonly SqliteCommand _scanTriplets;
    private readonly SqliteCommand _scanClients;
    private readonly SqliteCommand _deleteTriplet;
    private readonly SqliteCommand _deleteClient;

    public Statements(SqliteConnection connection)
    {
        _connection = connection;
        // BEGIN IMMEDIATE takes the write lock up front: no read-to-write upgrade can deadlock.
        Begin = Create("BEGIN IMMEDIATE");
        Commit = Create("COMMIT");
        Rollback = Create("ROLLBACK");
        Savepoint = Create("SAVEPOINT decision");
        Release = Create("RELEASE decision");
        RollbackToSavepoint = Create("ROLLBACK TO decision");
        _findTriplet = Create("SELECT first_seen, last_seen FROM triplets WHERE key = $key", "$key");
        _saveTriplet = Create(
            "INSERT INTO triplets (key, first_seen, last_seen) VALUES ($key, $a, $b) " +
            "ON CONFLICT (key) DO UPDATE SET first_seen = excluded.first_seen, last_seen = excluded.last_seen",
            "$key", "$a", "$b");
        _findClient = Create("SELECT count, last_seen FROM clients WHERE key = $key", "$key");
        _saveClient = Create(
            "INSERT INTO clients (key, count, last_seen) VALUES ($key, $a, $b) " +
            "ON CONFLICT (key) DO UPDATE SET count = excluded.count, last_seen = excluded.last_seen",
            "$key", "$a", "$b");
        _scanTriplets = Create("SELECT key, first_seen, last_seen FROM triplets WHERE key > $key ORDER BY key LIMIT $n", "$key", "$n");
        _scanClients = Create("SELECT key, count, last_seen FROM clients WHERE key > $key ORDER BY key LIMIT $n", "$key", "$n");
        _deleteTriplet = Create("DELETE FROM triplets WHERE key = $key", "$key");
        _deleteClient = Create("DELETE FROM clients WHERE key = $key", "$key");
    }

    public SqliteCommand Begin { get; }
    public SqliteCommand Commit { get; }
    public SqliteCommand Rollback { get; }
    public SqliteCommand Savepoint { get; }
    public SqliteCommand Release { get; }
    public SqliteCommand RollbackToSavepoint { get; }

    public bool InAutocommit => SQLitePCL.raw.sqlite3_get_autocommit(_connection.Handle) != 0;

    public TripletRecord? FindTriplet(string key) => Find(_findTriplet, key) is { } r ? new TripletRecord(r.A, r.B) : null;

    public void SaveTriplet(string key, TripletRecord record) => Save(_saveTriplet, key, record.FirstSeen, record.LastSeen);

    public ClientRecord? FindClient(string key) => Find(_findClient, key) is { } r ? new ClientRecord(r.A, r.B) : null;

    public void SaveClient(string key, ClientRecord record) => Save(_saveClient, key, record.Count, record.LastSeen);

    /// <summary>Examines up to <paramref name="rows"/> entries after <paramref name="after"/> in key
    /// order and deletes the expired ones. Returns the key to continue after (null at the end).</summary>
    public (string? Next, long Scanned, long Deleted) CleanStep(MaintenancePolicy policy, bool triplets, string after, int rows)
    {
        SqliteCommand scan = triplets ? _scanTriplets : _scanClients;
        scan.Parameters[0].Value = after;
        scan.Parameters[1].Value = rows;
        var expired = new List<string>();
        string? last = null;
        long scanned = 0;
        using (var reader = scan.ExecuteReader())
        {
            while (reader.Read())
            {
                last = reader.GetString(0);
                scanned++;
                bool isExpired = triplets
                    ? policy.IsTripletExpired(new TripletRecord(reader.GetInt64(1), reader.GetInt64(2)))
                    : policy.IsClientExpired(new ClientRecord(reader.GetInt64(1), reader.GetInt64(2)));
                if (isExpired)
                {
                    expired.Add(last);
                }
            }
        }
        SqliteCommand delete = triplets ? _deleteTriplet : _deleteClient;
        foreach (string key in expired)
        {
            delete.Parameters[0].Value = key;
            delete.ExecuteNonQuery();
        }
        return (scanned < rows ? null : last, scanned, expired.Count);
    }

    private static (long A, long B)? Find(SqliteCommand command, string key)
    {
        command.Parameters[0].Value = key;
        using var reader = command.ExecuteReader();
        return reader.Read() ? (reader.GetInt64(0), reader.GetInt64(1)) : null;
    }

    private static void Save(SqliteCommand command, string key, long a, long b)
    {
        command.Parameters[0].Value = key;
        command.Parameters[1].Value = a;
        command.Parameters[2].Value = b;
        command.ExecuteNonQuery();
    }

    private SqliteCommand Create(string sql, params string[] parameters)
    {
        var command = _connection.CreateCommand();
        command.CommandText = sql;
        foreach (string name in parameters)
        {
            command.Parameters.Add(new SqliteParameter { ParameterName = name });
        }
        _all.Add(command);
        return command;
    }

    public void Dispose()
    {
        foreach (var command in _all)
        {
            command.Dispose();
        }
    }
}
