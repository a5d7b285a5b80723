using System.CommandLine;
using Microsoft.Data.Sqlite;
using Postgrey.Configuration;
using Postgrey.Core.Storage;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey db init</c>: the shared database's schema made ahead of time, owned by an owner
/// role, so that the service can run as a role with only SELECT, INSERT, UPDATE, DELETE.
/// <c>postgrey db copy</c>: a database copied from SQLite into PostgreSQL or back, so that a
/// single-host site becomes a cluster (or goes back) without greylisting anyone again.
/// </summary>
internal static class DbCommand
{
    public static Command Create()
    {
        var command = new Command("db", "The shared PostgreSQL database: create its schema (db init), copy a database between SQLite and PostgreSQL (db copy)");
        command.Subcommands.Add(Init());
        command.Subcommands.Add(Copy());
        return command;
    }

    private static Command Init()
    {
        var db = DatabaseFlags.Uri("--db", "the database, as a role that may create tables in it and grant on them (its owner, or postgres): postgresql://ROLE@HOST:PORT/DBNAME");
        db.Required = true;
        var password = DatabaseFlags.PasswordFile();
        var owner = DatabaseFlags.NonEmpty("--owner", "ROLE", "role to own the tables (default: the role of --db)");
        var grant = new Option<string[]>("--grant")
        {
            Description = "role the service logs in as: given SELECT, INSERT, UPDATE, DELETE on the tables, SELECT on schema_version (repeatable)",
            HelpName = "ROLE",
            AllowMultipleArgumentsPerToken = false,
            CustomParser = result =>
            {
                if (result.Tokens.Any(t => t.Value.Length == 0))
                {
                    result.AddError("--grant needs a role name");
                }
                return [.. result.Tokens.Select(t => t.Value)];
            },
        };
        var command = new Command("init", "Create (or migrate) the schema of the shared database, owned by --owner, with --grant roles given only what the service needs. Running it again changes nothing.")
        {
            db, password, owner, grant,
        };
        command.SetAction(r => RunInit(DatabaseFlags.Resolve(r.GetValue(db)!, r.GetValue(password)), r.GetValue(owner), r.GetValue(grant) ?? []));
        return command;
    }

    private static int RunInit((string ConnectionString, string Description) db, string? owner, string[] grants)
    {
        InitResult result;
        try
        {
            result = PostgreSqlAdmin.Init(db.ConnectionString, owner, grants);
        }
        catch (Exception ex) when (PostgreSqlAdmin.IsDatabaseError(ex))
        {
            return ToolCommand.Fail("db init", $"can't use database {db.Description}: {PostgreSqlAdmin.Explain(ex)}; nothing changed");
        }
        string schema = result.FoundVersion == 0 ? $"schema version {result.Version} created"
            : result.FoundVersion == result.Version ? $"schema version {result.Version} present"
            : $"schema migrated from version {result.FoundVersion} to {result.Version}";
        string granted = result.Granted.Count == 0 ? "" : $"; SELECT, INSERT, UPDATE, DELETE granted to {string.Join(", ", result.Granted)}";
        Console.Out.WriteLine($"{schema} in {db.Description}; tables owned by {result.Owner}{granted}");
        return 0;
    }

    private static Command Copy()
    {
        var fromDbdir = DatabaseFlags.NonEmpty("--from-dbdir", "DIR", "copy from the SQLite database in DIR (the service's --dbdir)");
        var fromDb = DatabaseFlags.Uri("--from-db", "copy from the PostgreSQL database at URI");
        var toDbdir = DatabaseFlags.NonEmpty("--to-dbdir", "DIR", "copy into the SQLite database in DIR, created if need be");
        var toDb = DatabaseFlags.Uri("--to-db", "copy into the PostgreSQL database at URI (its schema created if absent and the role may)");
        var password = DatabaseFlags.PasswordFile();
        var replace = new Option<bool>("--replace")
        {
            Description = "overwrite rows already in the target (default: keep them, and count them as kept)",
        };
        var command = new Command("copy", "Copy the triplets and auto-whitelisted clients from SQLite into PostgreSQL, or back, in one transaction on the target. Stop the service on the source first.")
        {
            fromDbdir, fromDb, toDbdir, toDb, password, replace,
        };
        command.Validators.Add(result =>
        {
            bool fromSqlite = DatabaseFlags.IsGiven(result, fromDbdir), fromPg = DatabaseFlags.IsGiven(result, fromDb);
            bool toSqlite = DatabaseFlags.IsGiven(result, toDbdir), toPg = DatabaseFlags.IsGiven(result, toDb);
            if (fromSqlite == fromPg)
            {
                result.AddError("give one source: --from-dbdir=DIR or --from-db=URI");
            }
            else if (toSqlite == toPg)
            {
                result.AddError("give one target: --to-dbdir=DIR or --to-db=URI");
            }
            else if (fromSqlite == toSqlite)
            {
                result.AddError("copy goes between SQLite and PostgreSQL: one side --from-dbdir or --to-dbdir, the other --from-db or --to-db");
            }
        });
        command.SetAction(r =>
        {
            DbPassword? file = r.GetValue(password);
            bool replacing = r.GetValue(replace);
            return r.GetValue(fromDb) is { } source
                ? ToSqlite(DatabaseFlags.Resolve(source, file), Path.GetFullPath(r.GetValue(toDbdir)!), replacing)
                : ToPostgreSql(Path.GetFullPath(r.GetValue(fromDbdir)!), DatabaseFlags.Resolve(r.GetValue(toDb)!, file), replacing);
        });
        return command;
    }

    private static int ToPostgreSql(string dbdir, (string ConnectionString, string Description) db, bool replace)
    {
        var options = new SqliteStoreOptions { Directory = dbdir };
        IReadOnlyList<TripletRow> triplets;
        IReadOnlyList<ClientRow> clients;
        try
        {
            triplets = SqliteImport.ReadTriplets(options);
            clients = SqliteImport.ReadClients(options);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SqliteException or InvalidOperationException)
        {
            return ToolCommand.Fail("db copy", $"can't read {options.DatabasePath}: {ex.Message}; nothing copied");
        }
        try
        {
            if (replace && PostgreSqlBulk.ServicesConnected(db.ConnectionString) > 0)
            {
                // Overwriting beside them could put back an older first-seen than a decision just stored.
                return ToolCommand.Fail("db copy", $"a postgrey service is connected to {db.Description}; stop every one before --replace. Nothing copied");
            }
            BulkCounts counts = PostgreSqlBulk.Upsert(
                db.ConnectionString,
                triplets.Select(r => KeyValuePair.Create(r.Key, new TripletRecord(r.FirstSeen, r.LastSeen))),
                clients.Select(r => KeyValuePair.Create(r.Key, new ClientRecord(r.Count, r.LastSeen))),
                replace);
            Console.Out.WriteLine($"copied {counts.Triplets} triplets, {counts.Clients} clients; kept {counts.Kept}");
            return 0;
        }
        catch (Exception ex) when (PostgreSqlAdmin.IsDatabaseError(ex))
        {
            return ToolCommand.Fail("db copy", $"can't write database {db.Description}: {PostgreSqlAdmin.Explain(ex)}; nothing copied");
        }
    }

    private static int ToSqlite((string ConnectionString, string Description) db, string dbdir, bool replace)
    {
        BulkRows rows;
        try
        {
            rows = PostgreSqlBulk.Read(db.ConnectionString);
        }
        catch (Exception ex) when (PostgreSqlAdmin.IsDatabaseError(ex))
        {
            return ToolCommand.Fail("db copy", $"can't read database {db.Description}: {PostgreSqlAdmin.Explain(ex)}; nothing copied");
        }
        return WriteSqlite(dbdir, rows, replace);
    }

    /// <summary>Rows of the shared database into the SQLite database of <paramref name="dbdir"/>,
    /// under its postgrey.lock; the one summary line or the one error line.</summary>
    private static int WriteSqlite(string dbdir, BulkRows rows, bool replace)
    {
        ImportCounts counts;
        try
        {
            counts = SqliteImport.Upsert(
                new SqliteStoreOptions { Directory = dbdir },
                rows.Triplets.Select(p => new TripletRow(p.Key, p.Value.FirstSeen, p.Value.LastSeen)),
                rows.Clients.Select(p => new ClientRow(p.Key, p.Value.Count, p.Value.LastSeen)),
                replace);
        }
        catch (StoreLockedException ex)
        {
            return ToolCommand.Fail("db copy", $"{ex.LockPath} is locked: the service is running on {dbdir}; stop it first. Nothing copied");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or SqliteException or InvalidOperationException)
        {
            return ToolCommand.Fail("db copy", $"can't write {Path.Combine(dbdir, SqliteStoreOptions.DatabaseFileName)}: {ex.Message}; nothing copied");
        }
        Console.Out.WriteLine($"copied {counts.Triplets} triplets, {counts.Clients} clients; kept {counts.Kept}");
        return 0;
    }
}
