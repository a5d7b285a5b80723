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

    /// <summary>
    /// Brings the database to <see cref="CurrentVersion"/>; safe when several hosts start at
    /// once. A database already at that version is only read: a service whose role has nothing
    /// but SELECT, INSERT, UPDATE and DELETE (<c>postgrey db init</c>) creates nothing. A schema
    /// that is absent or older, and a role that may not create it, is an error that says so.
    /// </summary>
    public static void Migrate(NpgsqlConnection connection)
    {
        if (ReadVersion(connection) == CurrentVersion)
        {
            return;
        }
        using NpgsqlTransaction tx = connection.BeginTransaction();
        MigrateInTransaction(connection);
        tx.Commit();
    }

    /// <summary><see cref="MigrateLocked"/>, with a role that may not create the tables told so.</summary>
    public static int MigrateInTransaction(NpgsqlConnection connection)
    {
        string user = CurrentUser(connection); // asked first: after a failure the transaction is aborted
        try
        {
            return MigrateLocked(connection);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InsufficientPrivilege)
        {
            throw new InvalidOperationException(
                $"the schema is not there (or older than version {CurrentVersion}) and role \"{user}\" may not create it " +
                $"({ex.MessageText}, SQLSTATE {ex.SqlState}): run postgrey db init as the database's owner", ex);
        }
    }

    /// <summary>The migration itself, inside the caller's transaction: the advisory lock, then
    /// every missing version. Returns the version found (0: no schema).</summary>
    public static int MigrateLocked(NpgsqlConnection connection)
    {
        Execute(connection, $"SELECT pg_advisory_xact_lock({LockClass}, {MigrateLock})");
        if (!Exists(connection, "schema_version"))
        {
            // Not CREATE ... IF NOT EXISTS: that asks for CREATE on the schema even when the table is there.
            Execute(connection, "CREATE TABLE schema_version (version integer NOT NULL)");
        }
        int found = ReadVersion(connection);
        if (found > CurrentVersion)
        {
            throw new InvalidOperationException(
                $"the database has schema version {found}, newer than this program knows ({CurrentVersion}); refusing to touch it");
        }
        for (int version = found; version < CurrentVersion; version++)
        {
            Execute(connection, Migrations[version]);
            Execute(connection, $"INSERT INTO schema_version (version) VALUES ({version + 1})");
        }
        return found;
    }

    /// <summary>The version recorded in schema_version; 0 when there is no such table.</summary>
    public static int ReadVersion(NpgsqlConnection connection)
    {
        if (!Exists(connection, "schema_version"))
        {
            return 0;
        }
        using var read = new NpgsqlCommand("SELECT coalesce(max(version), 0) FROM schema_version", connection);
        return Convert.ToInt32(read.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Whether <paramref name="table"/> is in the schema the tables are created in. Read from
    /// pg_class with the statement's snapshot, not with to_regclass: a name lookup uses the
    /// session's catalog cache, which after the wait for the migration lock may not yet know the
    /// table another host has just created.
    /// </summary>
    public static bool Exists(NpgsqlConnection connection, string table)
    {
        using var find = new NpgsqlCommand(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " +
            "WHERE c.relname = $1 AND n.nspname = current_schema())",
            connection)
        {
            Parameters = { new() { Value = table } },
        };
        return (bool)find.ExecuteScalar()!;
    }

    /// <summary>
    /// The privileges among SELECT, INSERT, UPDATE, DELETE that the connected role lacks on the
    /// two tables ("triplets: UPDATE, DELETE"), or null when it has them all: checked at start, so
    /// that a role without them stops the service with a message rather than failing every decision.
    /// </summary>
    public static string? MissingPrivileges(NpgsqlConnection connection)
    {
        using var check = new NpgsqlCommand(
            "SELECT t, string_agg(p, ', ' ORDER BY o) FROM unnest(array['triplets', 'clients']) t, " +
            "unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) WITH ORDINALITY AS q(p, o) " +
            "WHERE NOT has_table_privilege(t, p) GROUP BY t ORDER BY t DESC",
            connection);
        using NpgsqlDataReader reader = check.ExecuteReader();
        var missing = new List<string>();
        while (reader.Read())
        {
            missing.Add($"{reader.GetString(0)}: {reader.GetString(1)}");
        }
        return missing.Count == 0 ? null : string.Join("; ", missing);
    }

    public static string CurrentUser(NpgsqlConnection connection)
    {
        using var who = new NpgsqlCommand("SELECT current_user", connection);
        return (string)who.ExecuteScalar()!;
    }

    public static void Execute(NpgsqlConnection connection, string sql)
    {
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }
}
