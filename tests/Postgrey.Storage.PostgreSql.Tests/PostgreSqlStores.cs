using Npgsql;
using Postgrey.Testing;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>Options for a store on a database of the test cluster, over its Unix socket.
/// Also compiled into Postgrey.Core.Tests (linked), whose engine suite runs on both stores.</summary>
internal static class PostgreSqlStores
{
    public static PostgreSqlStoreOptions Options(PostgresCluster cluster, string database, TimeSpan? timeout = null, int stepRows = 2000)
    {
        NpgsqlConnectionStringBuilder builder = PostgreSqlConnectionString.Parse(cluster.SocketUri(database), out string error)
            ?? throw new InvalidOperationException(error);
        return new PostgreSqlStoreOptions
        {
            ConnectionString = builder.ConnectionString,
            Description = PostgreSqlConnectionString.Describe(builder),
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            MaintenanceStepRows = stepRows,
        };
    }
}
