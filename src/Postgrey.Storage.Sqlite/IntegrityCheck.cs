using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using SQLitePCL;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// PRAGMA quick_check at start, bounded in time. A damaged page would otherwise make the
/// decisions that read it fail (DUNNO) and hide the triplets on it (new again), with no word
/// of why; stopping at start with what is wrong and what to do is better.
/// </summary>
internal static partial class IntegrityCheck
{
    /// <summary>Throws <see cref="StoreDamagedException"/> when the check finds damage.</summary>
    public static void Run(SqliteConnection connection, SqliteStoreOptions options, ILogger logger)
    {
        long deadline = Environment.TickCount64 + (long)options.IntegrityCheckTimeout.TotalMilliseconds;
        bool cut = false;
        // Called every 10,000 virtual machine steps (well under a millisecond): non-zero interrupts.
        raw.sqlite3_progress_handler(connection.Handle, 10_000, _ =>
        {
            cut = Environment.TickCount64 > deadline;
            return cut ? 1 : 0;
        }, null);
        var found = new List<string>();
        try
        {
            using SqliteCommand check = connection.CreateCommand();
            check.CommandText = "PRAGMA quick_check(10)";
            using SqliteDataReader rows = check.ExecuteReader();
            while (rows.Read())
            {
                found.Add(rows.GetString(0));
            }
        }
        catch (SqliteException ex) when (cut && ex.SqliteErrorCode == raw.SQLITE_INTERRUPT)
        {
            Log.Cut(logger, options.DatabasePath, options.IntegrityCheckTimeout.TotalSeconds);
            return;
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == raw.SQLITE_CORRUPT)
        {
            throw new StoreDamagedException(options.DatabasePath, ex.Message, ex);
        }
        finally
        {
            raw.sqlite3_progress_handler(connection.Handle, 0, null, null);
        }
        if (found is not ["ok"])
        {
            throw new StoreDamagedException(options.DatabasePath, "quick_check: " + string.Join("; ", found), null);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(4026, LogLevel.Warning, "database {Path}: the integrity check did not finish within {Seconds} s and was left; the database is used unchecked", EventName = "IntegrityCheckCut")]
        public static partial void Cut(ILogger logger, string path, double seconds);
    }
}
