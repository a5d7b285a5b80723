using System.CommandLine;
using Microsoft.Data.Sqlite;
using Postgrey.Core.Storage;
using Postgrey.Migration;
using Postgrey.Migration.BerkeleyDb;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey import</c>: postgrey's BerkeleyDB files into our database, in one transaction,
/// read without libdb. Refuses while postgrey or our service holds postgrey.lock in the target
/// dbdir (which, with both defaults, is postgrey's own lock: stopping postgrey first also makes
/// sure its files are complete on disk).
/// </summary>
internal static class ImportCommand
{
    public const string DefaultDirectory = "/var/lib/postgrey";
    private const int RejectionsShown = 5;

    public static Command Create()
    {
        var from = new Option<string>("--from")
        {
            Description = "postgrey's dbdir, holding postgrey.db and postgrey_clients.db",
            HelpName = "DIR",
            DefaultValueFactory = _ => DefaultDirectory,
        };
        var dbdir = new Option<string>("--dbdir")
        {
            Description = "our database directory, the service's --dbdir",
            HelpName = "DIR",
            DefaultValueFactory = _ => DefaultDirectory,
        };
        var replace = new Option<bool>("--replace")
        {
            Description = "overwrite rows already in our database (default: keep them, and count them as skipped)",
        };
        var db = DatabaseFlags.Uri("--db", "import into the shared PostgreSQL database instead, postgresql://USER@HOST:PORT/DBNAME");
        var password = DatabaseFlags.PasswordFile();
        var command = new Command("import", "Import postgrey's greylist and auto-whitelist (BerkeleyDB files, read directly) into our database, in one transaction. Stop postgrey first.")
        {
            from, dbdir, db, password, replace,
        };
        command.Validators.Add(result => DatabaseFlags.CheckDbOrDbdir(result, dbdir, db, password));
        command.SetAction(r => Run(r.GetValue(from)!, r.GetValue(dbdir)!, r.GetValue(db) is { } uri ? DatabaseFlags.Resolve(uri, r.GetValue(password)) : null, r.GetValue(replace)));
        return command;
    }

    private static int Run(string from, string dbdir, (string ConnectionString, string Description)? db, bool replace)
    {
        PostgreyDatabase source;
        try
        {
            if (IsLocked(Path.Combine(from, SqliteStoreOptions.LockFileName)))
            {
                // postgrey writes its pages out when it closes the databases: until then the
                // files may lack the latest triplets.
                return ToolCommand.Fail("import", $"{Path.Combine(from, SqliteStoreOptions.LockFileName)} is locked: postgrey is running on {from}; stop it first. Nothing imported");
            }
            source = PostgreyDatabase.Read(from);
        }
        catch (BerkeleyDbFormatException ex)
        {
            return ToolCommand.Fail("import", $"{ex.Message}; nothing imported");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return ToolCommand.Fail("import", $"{ex.Message}; nothing imported");
        }

        ImportCounts counts;
        if (db is { } shared)
        {
            try
            {
                if (replace && PostgreSqlBulk.ServicesConnected(shared.ConnectionString) > 0)
                {
                    return ToolCommand.Fail("import", $"a postgrey service is connected to {shared.Description}; stop every one before --replace. Nothing imported");
                }
                BulkCounts written = PostgreSqlBulk.Upsert(
                    shared.ConnectionString,
                    source.Triplets.Select(r => KeyValuePair.Create(r.Key, new TripletRecord(r.FirstSeen, r.LastSeen))),
                    source.Clients.Select(r => KeyValuePair.Create(r.Key, new ClientRecord(r.Count, r.LastSeen))),
                    replace);
                counts = new ImportCounts(written.Triplets, written.Clients, written.Kept);
            }
            catch (Exception ex) when (PostgreSqlAdmin.IsDatabaseError(ex))
            {
                return ToolCommand.Fail("import", $"can't write database {shared.Description}: {PostgreSqlAdmin.Explain(ex)}; nothing imported");
            }
        }
        else
        {
            try
            {
                counts = SqliteImport.Upsert(new SqliteStoreOptions { Directory = dbdir }, source.Triplets, source.Clients, replace);
            }
            catch (StoreLockedException ex)
            {
                return ToolCommand.Fail("import", $"{ex.LockPath} is locked: postgrey or the service is running on {dbdir}; stop it first. Nothing imported");
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SqliteException or InvalidOperationException)
            {
                return ToolCommand.Fail("import", $"can't write {Path.Combine(dbdir, SqliteStoreOptions.DatabaseFileName)}: {ex.Message}; nothing imported");
            }
        }

        foreach (Rejection rejection in source.Rejected.Take(RejectionsShown))
        {
            Console.Out.WriteLine($"rejected {rejection.File} \"{rejection.Key}\" = \"{rejection.Value}\": {rejection.Reason}");
        }
        if (source.Rejected.Count > RejectionsShown)
        {
            Console.Out.WriteLine($"... and {source.Rejected.Count - RejectionsShown} more rejected");
        }
        Console.Out.WriteLine(
            $"imported {counts.Triplets} triplets, {counts.Clients} clients; skipped {counts.Kept + source.Merged}; rejected {source.Rejected.Count}");
        return 0;
    }

    /// <summary>Whether another process holds <paramref name="path"/> (postgrey's flock). The file is
    /// not created, and the lock is let go at once: the import takes its own in its target dbdir.</summary>
    private static bool IsLocked(string path)
    {
        try
        {
            using var probe = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None);
            return false;
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }
}
