using System.Security.Cryptography;
using System.Text;
using Npgsql;
using Postgrey.Core.Storage;

namespace Postgrey.Storage.PostgreSql;

/// <summary>
/// First pass over a batch: each decision runs against this view, which finds nothing and
/// keeps nothing, only the keys asked for. On the "nothing stored" path a decision reads every
/// key it could touch (the engine reads the client, then the triplet), so these keys are, in
/// practice, a superset of what the real run reads; a key missed here costs one round trip
/// later (<see cref="BatchView"/>), not a wrong answer.
/// </summary>
internal sealed class KeyRecorder : IGreylistTransaction
{
    public HashSet<string> Triplets { get; } = new(StringComparer.Ordinal);

    public HashSet<string> Clients { get; } = new(StringComparer.Ordinal);

    public void Clear()
    {
        Triplets.Clear();
        Clients.Clear();
    }

    public TripletRecord? FindTriplet(string key)
    {
        Triplets.Add(key);
        return null;
    }

    public void SaveTriplet(string key, TripletRecord record) => Triplets.Add(key);

    public ClientRecord? FindClient(string key)
    {
        Clients.Add(key);
        return null;
    }

    public void SaveClient(string key, ClientRecord record) => Clients.Add(key);

    /// <summary>
    /// The advisory-lock ids of every key, sorted: every host takes its locks in this order, in
    /// one statement, so two hosts' batches never wait for each other in a cycle. A lock id,
    /// unlike a row lock, exists before its row does: two hosts seeing a new triplet at once
    /// serialise on it, and the second one finds the first one's first-seen.
    /// </summary>
    public long[] LockIds() => LockIds(Triplets, Clients);

    /// <summary>The advisory-lock ids of <paramref name="triplets"/> and <paramref name="clients"/>, sorted.</summary>
    public static long[] LockIds(IReadOnlyCollection<string> triplets, IReadOnlyCollection<string> clients)
    {
        var ids = new long[triplets.Count + clients.Count];
        int i = 0;
        foreach (string key in triplets)
        {
            ids[i++] = LockId('t', key);
        }
        foreach (string key in clients)
        {
            ids[i++] = LockId('c', key);
        }
        Array.Sort(ids);
        return ids;
    }

    /// <summary>64 bits of SHA-256 of the table letter and key: the same on every host and
    /// every .NET version (string.GetHashCode is randomised per process). A collision only
    /// makes two keys wait for each other.</summary>
    public static long LockId(char table, string key)
    {
        int length = Encoding.UTF8.GetByteCount(key) + 1;
        byte[] bytes = new byte[length];
        bytes[0] = (byte)table;
        Encoding.UTF8.GetBytes(key, bytes.AsSpan(1));
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(bytes, hash);
        return BitConverter.ToInt64(hash);
    }
}

/// <summary>
/// The batch's rows in memory, as read under the batch's locks: decisions run against it one
/// after the other (so they see each other's writes, as they would in sequence), and the rows
/// they changed are written back in one statement per table. A decision that throws has its
/// writes undone here, and the others of the batch go on. A key the first pass did not read
/// stops its decision (<see cref="KeyNotLoadedException"/>): the writer reads it
/// (<see cref="FetchMissingAsync"/>) and runs that decision again.
/// </summary>
internal sealed class BatchView(NpgsqlConnection connection) : IGreylistTransaction
{
    private readonly List<string> _missingTriplets = [];
    private readonly List<string> _missingClients = [];
    private readonly Dictionary<string, TripletRecord?> _triplets = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ClientRecord?> _clients = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirtyTriplets = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirtyClients = new(StringComparer.Ordinal);
    private readonly List<Action> _undo = [];

    /// <summary>Keys read with a round trip of their own because the first pass missed them (for tests and the benchmark).</summary>
    public int ExtraReads { get; private set; }

    /// <summary>BEGIN's companion: the advisory locks of <paramref name="ids"/>, sorted, in one statement.</summary>
    public static NpgsqlBatchCommand LockCommand(long[] ids) =>
        new("SELECT count(pg_advisory_xact_lock(id)) FROM unnest($1::bigint[]) AS id") { Parameters = { new() { Value = ids } } };

    /// <summary>The rows of the keys, in a statement after the locks' (READ COMMITTED: its
    /// snapshot sees every commit that released one of them).</summary>
    public static NpgsqlBatchCommand ReadCommand(IReadOnlyCollection<string> triplets, IReadOnlyCollection<string> clients) =>
        new("SELECT 0, key, first_seen, last_seen FROM triplets WHERE key = ANY($1) " +
            "UNION ALL SELECT 1, key, count, last_seen FROM clients WHERE key = ANY($2)")
        {
            Parameters = { new() { Value = triplets.ToArray() }, new() { Value = clients.ToArray() } },
        };

    /// <summary>Runs <paramref name="read"/> (ending with a <see cref="ReadCommand"/>) and keeps the rows it found.</summary>
    public async Task LoadAsync(NpgsqlBatch read)
    {
        using NpgsqlDataReader reader = await read.ExecuteReaderAsync().ConfigureAwait(false);
        do
        {
            while (reader.FieldCount == 4 && await reader.ReadAsync().ConfigureAwait(false))
            {
                string key = reader.GetString(1);
                if (reader.GetInt32(0) == 0)
                {
                    _triplets[key] = new TripletRecord(reader.GetInt64(2), reader.GetInt64(3));
                }
                else
                {
                    _clients[key] = new ClientRecord(reader.GetInt64(2), reader.GetInt64(3));
                }
            }
        }
        while (await reader.NextResultAsync().ConfigureAwait(false));
    }

    /// <summary>
    /// Locks and reads the keys a decision stopped at, in the batch's transaction. Out of the
    /// sorted order, so a deadlock with another host is possible: PostgreSQL detects it and the
    /// writer runs the batch again.
    /// </summary>
    public async Task FetchMissingAsync()
    {
        ExtraReads += _missingTriplets.Count + _missingClients.Count;
        Loaded(_missingTriplets, _missingClients);
        using var read = new NpgsqlBatch(connection)
        {
            BatchCommands = { LockCommand(KeyRecorder.LockIds(_missingTriplets, _missingClients)), ReadCommand(_missingTriplets, _missingClients) },
        };
        _missingTriplets.Clear();
        _missingClients.Clear();
        await LoadAsync(read).ConfigureAwait(false);
    }

    public void Clear()
    {
        _triplets.Clear();
        _clients.Clear();
        _dirtyTriplets.Clear();
        _dirtyClients.Clear();
        _undo.Clear();
        _missingTriplets.Clear();
        _missingClients.Clear();
    }

    /// <summary>Marks the keys as read (absent until a row of the read says otherwise), so that
    /// a decision asking for one finds it here and does not stop.</summary>
    public void Loaded(IEnumerable<string> triplets, IEnumerable<string> clients)
    {
        foreach (string key in triplets)
        {
            _triplets[key] = null;
        }
        foreach (string key in clients)
        {
            _clients[key] = null;
        }
    }

    public void BeginDecision() => _undo.Clear();

    /// <summary>Undoes the writes of the decision that just threw.</summary>
    public void UndoDecision()
    {
        for (int i = _undo.Count - 1; i >= 0; i--)
        {
            _undo[i]();
        }
        _undo.Clear();
    }

    public TripletRecord? FindTriplet(string key)
    {
        if (!_triplets.TryGetValue(key, out TripletRecord? found))
        {
            _missingTriplets.Add(key);
            throw new KeyNotLoadedException();
        }
        return found;
    }

    public void SaveTriplet(string key, TripletRecord record) => Save(_triplets, _dirtyTriplets, key, FindTriplet(key), record);

    public ClientRecord? FindClient(string key)
    {
        if (!_clients.TryGetValue(key, out ClientRecord? found))
        {
            _missingClients.Add(key);
            throw new KeyNotLoadedException();
        }
        return found;
    }

    public void SaveClient(string key, ClientRecord record) => Save(_clients, _dirtyClients, key, FindClient(key), record);

    /// <summary>Writes <paramref name="record"/> into the batch's view and marks it to be written
    /// back, with an undo step that restores <paramref name="before"/> if the decision fails.</summary>
    private void Save<T>(Dictionary<string, T?> rows, HashSet<string> dirty, string key, T? before, T record)
        where T : struct
    {
        bool wasDirty = !dirty.Add(key);
        rows[key] = record;
        _undo.Add(() =>
        {
            rows[key] = before;
            if (!wasDirty)
            {
                dirty.Remove(key);
            }
        });
    }

    /// <summary>Adds the upserts of every changed row to <paramref name="batch"/>: one statement per table over arrays.</summary>
    public void AddWrites(NpgsqlBatch batch)
    {
        if (_dirtyTriplets.Count > 0)
        {
            batch.BatchCommands.Add(Upsert("triplets", "first_seen", _dirtyTriplets, k => _triplets[k] is { } r ? (r.FirstSeen, r.LastSeen) : default));
        }
        if (_dirtyClients.Count > 0)
        {
            batch.BatchCommands.Add(Upsert("clients", "count", _dirtyClients, k => _clients[k] is { } r ? (r.Count, r.LastSeen) : default));
        }
    }

    private static NpgsqlBatchCommand Upsert(string table, string first, HashSet<string> keys, Func<string, (long A, long B)> row)
    {
        var k = new string[keys.Count];
        var a = new long[keys.Count];
        var b = new long[keys.Count];
        int i = 0;
        foreach (string key in keys)
        {
            (a[i], b[i]) = row(key);
            k[i++] = key;
        }
        return new NpgsqlBatchCommand(
            $"INSERT INTO {table} (key, {first}, last_seen) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) " +
            $"ON CONFLICT (key) DO UPDATE SET {first} = excluded.{first}, last_seen = excluded.last_seen")
        {
            Parameters = { new() { Value = k }, new() { Value = a }, new() { Value = b } },
        };
    }
}

/// <summary>A decision asked for a key the batch has not read: the writer reads it and runs the decision again.</summary>
internal sealed class KeyNotLoadedException : Exception
{
    public KeyNotLoadedException()
        : base("key not read by the batch yet")
    {
    }

    public KeyNotLoadedException(string message)
        : base(message)
    {
    }

    public KeyNotLoadedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
