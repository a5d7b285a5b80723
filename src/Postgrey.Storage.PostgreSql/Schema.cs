using Npgsql;

namespace Postgrey.Storage.PostgreSql;

/// <summary>
/// The schema and its migrations, created at the first start by whichever host comes first
/// (the others wait on an advisory lock, then find it done). docs/cluster.md shows the same SQL
/// for a DBA who prefers to create it by hand.
/// </summary>
internal static class Schema
{
    public const int CurrentVersion = 1;

    /// <summary>Advisory lock (two-int form, apart from the per-key bigint locks) taken while migrating.</summary>
    public const int LockClass = 0x50475259; // "PGRY"

    public const int MigrateLock = 1;

    public const int MaintenanceLock = 2;

    public static readonly string[] Migrations =
    [
        // 1: postgrey's two databases as tables, as in the SQLite store. fillfactor 70 leaves room
        // in each page so that the update every decision makes (last_seen, not indexed) stays a
        // HOT update: no new index entry, no page split.
        """
        CREATE TABLE triplets (
            key        text   NOT NULL PRIMARY KEY,
            first_seen bigint NOT NULL,
            last_seen  bigint NOT NULL
        ) WITH (fillfactor = 70);
        CREATE TABLE clients (
            key        text   NOT NULL PRIMARY KEY,
            count      bigint NOT NULL,
            last_seen  bigint NOT NULL
        ) WITH (fillfactor = 70);
        """,
    ];

    /// <summary>Brings the database to <see cref="CurrentVersion"/>; safe when several hosts start at once.</summary>
    public static void Migrate(NpgsqlConnection connection)
    {
        using NpgsqlTransaction tx = connection.BeginTransaction();
        Execute(connection, $"SELECT pg_advisory_xact_lock({LockClass}, {MigrateLock})");
        Execute(connection, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)");
        int version;
        using (var read = new NpgsqlCommand("SELECT coalesce(max(version), 0) FROM schema_version", connection))
        {
            version = Convert.ToInt32(read.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
        if (version > CurrentVersion)
        {
            throw new InvalidOperationException(
                $"the database has schema version {version}, newer than this program knows ({CurrentVersion}); refusing to touch it");
        }
        for (; version < CurrentVersion; version++)
        {
            Execute(connection, Migrations[version]);
            Execute(connection, $"INSERT INTO schema_version (version) VALUES ({version + 1})");
        }
        tx.Commit();
    }

    public static void Execute(NpgsqlConnection connection, string sql)
    {
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }
}
