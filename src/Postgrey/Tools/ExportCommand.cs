using System.CommandLine;
using Microsoft.Data.Sqlite;
using Postgrey.Migration;
using Postgrey.Migration.BerkeleyDb;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey export</c>: our database in the text format of db_dump, which db_load turns back
/// into postgrey's BerkeleyDB files: going back to postgrey is one db_load per file. Safe beside
/// the running service (a WAL reader never blocks its writer).
/// </summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var dbdir = new Option<string>("--dbdir")
        {
            Description = "our database directory, the service's --dbdir",
            HelpName = "DIR",
            DefaultValueFactory = _ => ImportCommand.DefaultDirectory,
        };
        var db = DatabaseFlags.Uri("--db", "export from the shared PostgreSQL database instead, postgresql://USER@HOST:PORT/DBNAME");
        var password = DatabaseFlags.PasswordFile();
        var clients = new Option<bool>("--clients")
        {
            Description = "export the auto-whitelisted clients (for postgrey_clients.db) instead of the triplets (for postgrey.db)",
        };
        var output = new Option<string?>("--output", "-o")
        {
            Description = "write to FILE, created with mode 0600 (default: standard output)",
            HelpName = "FILE",
        };
        var command = new Command("export", "Write our triplets (or with --clients our auto-whitelist) in db_dump's text format, for db_load: postgrey export | db_load /var/lib/postgrey/postgrey.db")
        {
            dbdir, db, password, clients, output,
        };
        command.Validators.Add(result => DatabaseFlags.CheckDbOrDbdir(result, dbdir, db, password));
        command.SetAction(r => Run(r.GetValue(dbdir)!, r.GetValue(db) is { } uri ? DatabaseFlags.Resolve(uri, r.GetValue(password)) : null, r.GetValue(clients), r.GetValue(output)));
        return command;
    }

    private static int Run(string dbdir, (string ConnectionString, string Description)? db, bool clients, string? output)
    {
        IEnumerable<KeyValuePair<byte[], byte[]>> pairs;
        if (db is { } shared)
        {
            try
            {
                BulkRows rows = PostgreSqlBulk.Read(shared.ConnectionString);
                pairs = clients
                    ? PostgreyDatabase.ClientPairs(rows.Clients.Select(p => new ClientRow(p.Key, p.Value.Count, p.Value.LastSeen)))
                    : PostgreyDatabase.TripletPairs(rows.Triplets.Select(p => new TripletRow(p.Key, p.Value.FirstSeen, p.Value.LastSeen)));
            }
            catch (Exception ex) when (PostgreSqlAdmin.IsDatabaseError(ex))
            {
                return ToolCommand.Fail("export", $"can't read database {shared.Description}: {PostgreSqlAdmin.Explain(ex)}");
            }
        }
        else
        {
            var options = new SqliteStoreOptions { Directory = dbdir };
            try
            {
                pairs = clients
                    ? PostgreyDatabase.ClientPairs(SqliteImport.ReadClients(options))
                    : PostgreyDatabase.TripletPairs(SqliteImport.ReadTriplets(options));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SqliteException or InvalidOperationException)
            {
                return ToolCommand.Fail("export", $"can't read {options.DatabasePath}: {ex.Message}");
            }
        }

        try
        {
            if (output is null)
            {
                using var stdout = new StreamWriter(Console.OpenStandardOutput()) { NewLine = "\n" };
                DumpWriter.Write(stdout, pairs);
                return 0;
            }
            var file = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                file.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite; // keys name who mails whom
            }
            using var writer = new StreamWriter(output, System.Text.Encoding.ASCII, file) { NewLine = "\n" };
            DumpWriter.Write(writer, pairs);
            return 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return ToolCommand.Fail("export", $"can't write {output ?? "standard output"}: {ex.Message}");
        }
    }
}
