using System.Net.Sockets;
using Npgsql;

namespace Postgrey.Storage.PostgreSql;

/// <summary>What <c>postgrey db init</c> found and left: the version before (0: no schema) and now, and who owns the tables.</summary>
public sealed record InitResult(int FoundVersion, int Version, string Owner, IReadOnlyList<string> Granted);

/// <summary>
/// <c>postgrey db init</c>: the schema created ahead of time by an admin role, owned by an owner
/// role, with the service's role given only what deciding needs (SELECT, INSERT, UPDATE, DELETE
/// on the two tables, SELECT on schema_version). The service then finds the schema at its version
/// and creates nothing (<see cref="Schema.Migrate"/>).
/// </summary>
public static class PostgreSqlAdmin
{
    /// <summary>The tables of <see cref="Schema.Migrations"/>, schema_version first.</summary>
    private static readonly string[] Tables = ["schema_version", "triplets", "clients"];

    /// <summary>
    /// Creates or migrates the schema, gives its tables to <paramref name="owner"/> (if given) and
    /// grants <paramref name="grants"/> their rights, all in one transaction. Run twice, the second
    /// run finds everything as the first left it and changes nothing.
    /// </summary>
    public static InitResult Init(string connectionString, string? owner, IReadOnlyList<string> grants)
    {
        ArgumentNullException.ThrowIfNull(grants);
        using NpgsqlDataSource dataSource = DataSource(connectionString);
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction tx = connection.BeginTransaction();
        int found = Schema.MigrateLocked(connection);
        if (owner is not null)
        {
            foreach (string table in Tables)
            {
                // A no-op when it is the owner already.
                Schema.Execute(connection, $"ALTER TABLE {table} OWNER TO {Quote(owner)}");
            }
        }
        foreach (string role in grants)
        {
            Schema.Execute(connection, $"GRANT SELECT ON schema_version TO {Quote(role)}");
            Schema.Execute(connection, $"GRANT SELECT, INSERT, UPDATE, DELETE ON triplets, clients TO {Quote(role)}");
        }
        string actualOwner;
        using (var read = new NpgsqlCommand("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass('triplets')", connection))
        {
            actualOwner = (string)read.ExecuteScalar()!;
        }
        tx.Commit();
        return new InitResult(found, Schema.CurrentVersion, actualOwner, grants);
    }

    /// <summary>A role name as an SQL identifier, as given (case kept), quotes doubled.</summary>
    public static string Quote(string identifier)
    {
        ArgumentNullException.ThrowIfNull(identifier);
        return "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
    }

    /// <summary>A data source for one tool run: no pool, the application name the copy looks for
    /// (<see cref="PostgreSqlBulk.ServicesConnected"/>) left to the service.</summary>
    internal static NpgsqlDataSource DataSource(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString)
        {
            Pooling = false,
            ApplicationName = "postgrey-tool",
            Timeout = 10,
            CommandTimeout = 0, // a copy of millions of rows takes what it takes
        };
        return new NpgsqlSlimDataSourceBuilder(builder.ConnectionString).EnableArrays().EnableTransportSecurity().Build();
    }

    /// <summary>True for the exceptions a tool turns into its one line: the server's, the network's, the admin's.</summary>
    public static bool IsDatabaseError(Exception ex) =>
        ex is NpgsqlException or InvalidOperationException or ArgumentException or IOException or SocketException or TimeoutException or UnauthorizedAccessException;

    /// <summary>What an admin needs to read: the server's message and its SQLSTATE, or the socket's.</summary>
    public static string Explain(Exception ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        return ex switch
        {
            PostgresException pg => $"{pg.MessageText} (SQLSTATE {pg.SqlState})",
            NpgsqlException { InnerException: { } inner } npgsql when inner is SocketException or IOException or TimeoutException => $"{npgsql.Message}: {inner.Message}",
            _ => ex.Message,
        };
    }
}
