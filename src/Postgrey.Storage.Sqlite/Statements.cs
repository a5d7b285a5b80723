using System.Text;
using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;
using SQLitePCL;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// The writer connection's prepared statements, on SQLite's C API (bind, step, reset: no
/// ADO.NET reader or parameter objects per decision); also the transaction view handed to
/// decisions. Used by the writer thread only.
/// </summary>
internal sealed class Statements : IGreylistTransaction, IDisposable
{
    private readonly sqlite3 _db;
    private readonly List<sqlite3_stmt> _all = [];
    private readonly sqlite3_stmt _begin;
    private readonly sqlite3_stmt _commit;
    private readonly sqlite3_stmt _rollback;
    private readonly Rows _triplets;
    private readonly Rows _clients;
    private readonly sqlite3_stmt _scanTriplets;
    private readonly sqlite3_stmt _scanClients;
    private readonly sqlite3_stmt _deleteTriplet;
    private readonly sqlite3_stmt _deleteClient;
    private byte[] _key = new byte[256];

    public Statements(SqliteConnection connection)
    {
        _db = connection.Handle!;
        // BEGIN IMMEDIATE takes the write lock up front: no read-to-write upgrade can deadlock.
        _begin = Prepare("BEGIN IMMEDIATE");
        _commit = Prepare("COMMIT");
        _rollback = Prepare("ROLLBACK");
        _triplets = new Rows(this, "triplets", "first_seen");
        _clients = new Rows(this, "clients", "count");
        _scanTriplets = Prepare("SELECT key, first_seen, last_seen FROM triplets WHERE key > ?1 ORDER BY key LIMIT ?2");
        _scanClients = Prepare("SELECT key, count, last_seen FROM clients WHERE key > ?1 ORDER BY key LIMIT ?2");
        _deleteTriplet = Prepare("DELETE FROM triplets WHERE key = ?1");
        _deleteClient = Prepare("DELETE FROM clients WHERE key = ?1");
    }

    public bool InAutocommit => raw.sqlite3_get_autocommit(_db) != 0;

    public void Begin()
    {
        ForgetFound();
        Done(_begin);
    }

    public void Commit() => Done(_commit);

    public void Rollback()
    {
        ForgetFound();
        Done(_rollback);
    }

    public TripletRecord? FindTriplet(string key) => _triplets.Find(key) is { } r ? new TripletRecord(r.A, r.B) : null;

    public void SaveTriplet(string key, TripletRecord record) => _triplets.Save(key, record.FirstSeen, record.LastSeen);

    public ClientRecord? FindClient(string key) => _clients.Find(key) is { } r ? new ClientRecord(r.A, r.B) : null;

    public void SaveClient(string key, ClientRecord record) => _clients.Save(key, record.Count, record.LastSeen);

    /// <summary>Forgets which rows were found: after a rollback they may be gone.</summary>
    private void ForgetFound()
    {
        _triplets.Forget();
        _clients.Forget();
    }

    /// <summary>Examines up to <paramref name="rows"/> entries after <paramref name="after"/> in key
    /// order and deletes the expired ones. Returns the key to continue after (null at the end).</summary>
    public (string? Next, long Scanned, long Deleted) CleanStep(MaintenancePolicy policy, bool triplets, string after, int rows)
    {
        sqlite3_stmt scan = triplets ? _scanTriplets : _scanClients;
        var expired = new List<string>();
        string? last = null;
        long scanned = 0;
        try
        {
            BindKey(scan, after);
            Check(raw.sqlite3_bind_int64(scan, 2, rows));
            int rc;
            while ((rc = raw.sqlite3_step(scan)) == raw.SQLITE_ROW)
            {
                last = raw.sqlite3_column_text(scan, 0).utf8_to_string();
                scanned++;
                long a = raw.sqlite3_column_int64(scan, 1);
                long b = raw.sqlite3_column_int64(scan, 2);
                bool isExpired = triplets
                    ? policy.IsTripletExpired(new TripletRecord(a, b))
                    : policy.IsClientExpired(new ClientRecord(a, b));
                if (isExpired)
                {
                    expired.Add(last);
                }
            }
            CheckDone(rc);
        }
        finally
        {
            raw.sqlite3_reset(scan);
        }
        sqlite3_stmt delete = triplets ? _deleteTriplet : _deleteClient;
        foreach (string key in expired)
        {
            BindKey(delete, key);
            Done(delete);
        }
        return (scanned < rows ? null : last, scanned, expired.Count);
    }

    private (long A, long B)? Find(sqlite3_stmt statement, string key)
    {
        try
        {
            BindKey(statement, key);
            int rc = raw.sqlite3_step(statement);
            if (rc == raw.SQLITE_ROW)
            {
                return (raw.sqlite3_column_int64(statement, 0), raw.sqlite3_column_int64(statement, 1));
            }
            CheckDone(rc);
            return null;
        }
        finally
        {
            raw.sqlite3_reset(statement);
        }
    }

    /// <summary>An UPDATE by key; false if it changed no row.</summary>
    private bool Update(sqlite3_stmt statement, string key, long a, long b)
    {
        Save(statement, key, a, b);
        return raw.sqlite3_changes(_db) > 0;
    }

    private void Save(sqlite3_stmt statement, string key, long a, long b)
    {
        BindKey(statement, key);
        Check(raw.sqlite3_bind_int64(statement, 2, a));
        Check(raw.sqlite3_bind_int64(statement, 3, b));
        Done(statement);
    }

    // Keys are bound as UTF-8 from a reused buffer (SQLite copies them).
    private void BindKey(sqlite3_stmt statement, string key)
    {
        int max = Encoding.UTF8.GetMaxByteCount(key.Length);
        if (max > _key.Length)
        {
            _key = new byte[max];
        }
        int n = Encoding.UTF8.GetBytes(key, _key);
        Check(raw.sqlite3_bind_text(statement, 1, _key.AsSpan(0, n)));
    }

    private void Done(sqlite3_stmt statement)
    {
        int rc = raw.sqlite3_step(statement);
        raw.sqlite3_reset(statement);
        CheckDone(rc);
    }

    private void CheckDone(int rc)
    {
        if (rc != raw.SQLITE_DONE)
        {
            SqliteException.ThrowExceptionForRC(rc, _db);
            throw new InvalidOperationException($"SQLite step returned {rc}");
        }
    }

    private void Check(int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(rc, _db);
        }
    }

    private sqlite3_stmt Prepare(string sql)
    {
        Check(raw.sqlite3_prepare_v2(_db, sql, out sqlite3_stmt statement));
        _all.Add(statement);
        return statement;
    }

    /// <summary>
    /// One table of key, two integers. It remembers the key of its last Find that found a row:
    /// saving that key again is a plain UPDATE (one B-tree search), not an upsert (an insert
    /// attempt, then the update). Anything else, or an UPDATE that changed nothing, upserts.
    /// </summary>
    private sealed class Rows
    {
        private readonly Statements _sql;
        private readonly sqlite3_stmt _find;
        private readonly sqlite3_stmt _upsert;
        private readonly sqlite3_stmt _update;
        private string? _found;

        public Rows(Statements sql, string table, string first)
        {
            _sql = sql;
            _find = sql.Prepare($"SELECT {first}, last_seen FROM {table} WHERE key = ?1");
            _upsert = sql.Prepare(
                $"INSERT INTO {table} (key, {first}, last_seen) VALUES (?1, ?2, ?3) " +
                $"ON CONFLICT (key) DO UPDATE SET {first} = excluded.{first}, last_seen = excluded.last_seen");
            _update = sql.Prepare($"UPDATE {table} SET {first} = ?2, last_seen = ?3 WHERE key = ?1");
        }

        public (long A, long B)? Find(string key)
        {
            (long A, long B)? row = _sql.Find(_find, key);
            _found = row is null ? null : key;
            return row;
        }

        public void Save(string key, long a, long b)
        {
            if (!ReferenceEquals(key, _found) || !_sql.Update(_update, key, a, b))
            {
                _sql.Save(_upsert, key, a, b);
            }
            _found = key;
        }

        public void Forget() => _found = null;
    }

    public void Dispose()
    {
        foreach (var statement in _all)
        {
            statement.Dispose();
        }
    }
}
