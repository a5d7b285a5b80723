using System.Globalization;
using System.Text;
using Postgrey.Migration.BerkeleyDb;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Migration;

/// <summary>A key or value of postgrey's files that could not be imported, and why.</summary>
public sealed record Rejection(string File, string Key, string Value, string Reason);

/// <summary>
/// The contents of a postgrey dbdir (<c>postgrey.db</c>, and <c>postgrey_clients.db</c> when
/// postgrey ran with its auto-whitelist), read from the BerkeleyDB files themselves and brought
/// to the rows of our store: keys as postgrey 1.37 builds them (<see cref="PostgreyKeys"/>),
/// values split into numbers. Nothing is written anywhere.
/// </summary>
public sealed class PostgreyDatabase
{
    public const string TripletsFileName = "postgrey.db";
    public const string ClientsFileName = "postgrey_clients.db";

    private PostgreyDatabase(IReadOnlyList<TripletRow> triplets, IReadOnlyList<ClientRow> clients, IReadOnlyList<Rejection> rejected, long merged)
    {
        Triplets = triplets;
        Clients = clients;
        Rejected = rejected;
        Merged = merged;
    }

    public IReadOnlyList<TripletRow> Triplets { get; }

    public IReadOnlyList<ClientRow> Clients { get; }

    public IReadOnlyList<Rejection> Rejected { get; }

    /// <summary>Entries folded into another one whose key they share once respelled (a 1.36 and a
    /// 1.37 key of the same triplet); the one seen last wins.</summary>
    public long Merged { get; }

    /// <summary>
    /// Reads <paramref name="directory"/>. postgrey.db must exist; postgrey_clients.db is read when
    /// it exists. Throws <see cref="BerkeleyDbFormatException"/> for a damaged file and
    /// <see cref="FileNotFoundException"/> when postgrey.db is missing.
    /// </summary>
    public static PostgreyDatabase Read(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string tripletsPath = Path.Combine(directory, TripletsFileName);
        if (!File.Exists(tripletsPath))
        {
            throw new FileNotFoundException($"{tripletsPath} does not exist", tripletsPath);
        }
        string clientsPath = Path.Combine(directory, ClientsFileName);
        var rejected = new List<Rejection>();
        long merged = 0;

        // Both files are read before anything is returned: a damaged clients file stops the import too.
        var tripletPairs = BtreeFile.ReadAll(tripletsPath);
        var clientPairs = File.Exists(clientsPath) ? BtreeFile.ReadAll(clientsPath) : [];

        var triplets = new Dictionary<string, TripletRow>(StringComparer.Ordinal);
        foreach (var (keyBytes, valueBytes) in tripletPairs)
        {
            (string key, string value) = (Decode(keyBytes), Decode(valueBytes));
            if (!PostgreyKeys.TryNormalizeTriplet(key, out string normalized, out string reason)
                || !PostgreyKeys.TryParseValue(value, extraFields: 1, out long first, out long last, out reason))
            {
                rejected.Add(new Rejection(TripletsFileName, key, value, reason));
                continue;
            }
            if (triplets.TryGetValue(normalized, out TripletRow earlier))
            {
                merged++;
                if (earlier.LastSeen > last)
                {
                    continue;
                }
            }
            triplets[normalized] = new TripletRow(normalized, first, last);
        }

        var clients = new Dictionary<string, ClientRow>(StringComparer.Ordinal);
        foreach (var (keyBytes, valueBytes) in clientPairs)
        {
            (string key, string value) = (Decode(keyBytes), Decode(valueBytes));
            if (!PostgreyKeys.TryNormalizeClient(key, out string normalized, out string reason)
                || !PostgreyKeys.TryParseValue(value, extraFields: 0, out long count, out long last, out reason))
            {
                rejected.Add(new Rejection(ClientsFileName, key, value, reason));
                continue;
            }
            if (clients.TryGetValue(normalized, out ClientRow earlier))
            {
                merged++;
                if (earlier.LastSeen > last)
                {
                    continue;
                }
            }
            clients[normalized] = new ClientRow(normalized, count, last);
        }
        return new PostgreyDatabase([.. triplets.Values], [.. clients.Values], rejected, merged);
    }

    /// <summary>Our triplets as postgrey.db's pairs: the key's UTF-8 bytes, <c>first,last</c>.</summary>
    public static IEnumerable<KeyValuePair<byte[], byte[]>> TripletPairs(IEnumerable<TripletRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return rows.Select(r => Pair(r.Key, r.FirstSeen, r.LastSeen));
    }

    /// <summary>Our clients as postgrey_clients.db's pairs: key, <c>count,last</c>.</summary>
    public static IEnumerable<KeyValuePair<byte[], byte[]>> ClientPairs(IEnumerable<ClientRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return rows.Select(r => Pair(r.Key, r.Count, r.LastSeen));
    }

    private static KeyValuePair<byte[], byte[]> Pair(string key, long a, long b) =>
        new(Encoding.UTF8.GetBytes(key), Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{a},{b}")));

    // Keys are decoded as the service decodes request values (UTF-8, invalid bytes replaced), so
    // that an imported key is the one the service builds for the same request.
    private static string Decode(byte[] bytes) => Encoding.UTF8.GetString(bytes);
}
