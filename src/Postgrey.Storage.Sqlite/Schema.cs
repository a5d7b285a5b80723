using Microsoft.Data.Sqlite;

namespace Postgrey.Storage.Sqlite;

/// <summary>The schema and its migrations. Keys are postgrey's key strings, times unix seconds.</summary>
internal static class Schema
{
    public const int CurrentVersion = 1;

    /// <summary>Page size of new databases.</summary>
    public const int PageSize = 1024;

    private static readonly string[] Migrations =
    [
        // 1: postgrey's two databases, "first,last" and "count,last", as columns. No index on
        // last_seen: every decision updates it, and maintenance walks the primary key instead.
        """
        CREATE TABLE triplets (
            key        TEXT    NOT NULL PRIMARY KEY,
            first_seen INTEGER NOT NULL,
            last_seen  INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE clients (
            key        TEXT    NOT NULL PRIMARY KEY,
            count      INTEGER NOT NULL,
            last_seen  INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ];

    /// <summary>Brings the database to <see cref="CurrentVersion"/>, each step in its own transaction.</summary>
    public static void Migrate(SqliteConnection connection)
    {
        Execute(connection, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
        int version;
        using (var read = connection.CreateCommand())
        {
            read.CommandText = "SELECT max(version) FROM schema_version";
            object? value = read.ExecuteScalar();
            version = value is long v ? (int)v : 0;
        }
        if (version > CurrentVersion)
        {
            throw new InvalidOperationException(
                $"the database has schema version {version}, newer than this program knows ({CurrentVersion}); refusing to touch it");
        }
        for (; version < CurrentVersion; version++)
        {
            using var tx = connection.BeginTransaction();
            using (var step = connection.CreateCommand())
            {
                step.Transaction = tx;
                step.CommandText = Migrations[version];
                step.ExecuteNonQuery();
            }
            using (var mark = connection.CreateCommand())
            {
                mark.Transaction = tx;
                mark.CommandText = "INSERT INTO schema_version (version) VALUES ($v)";
                mark.Parameters.AddWithValue("$v", version + 1);
                mark.ExecuteNonQuery();
            }
            tx.Commit();
        }
    }

    public static long Scalar(SqliteConnection connection, string sql)
    {
        ArgumentNullException.ThrowIfNull(connection);
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
