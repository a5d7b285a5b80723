using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace Postgrey.Storage.Sqlite;

/// <summary>
/// The database file or its WAL deleted, moved or replaced while the store runs. SQLite goes
/// on working on the files it has open, which no one can open again: after a restart every
/// decision since would be gone. The checkpointer notices it (<see cref="OpenFiles"/>), and
/// the writer writes the data out again from the connection that still reads the old files.
/// </summary>
public sealed partial class SqliteGreylistStore
{
    private const int BusyStepMilliseconds = 50;
    // Each tick wakes a thread-pool worker, which then spins before it sleeps again (measured:
    // 3% of the CPU at one connection with 100 ms); a quarter second is 5% of the time-out.
    private static readonly TimeSpan WatchdogPeriod = TimeSpan.FromMilliseconds(250);

    // Replaced by the writer during a recovery, while the checkpointer (its only other reader) waits for it.
    private OpenFiles _files;

    /// <summary>On the checkpointer thread: lets go of the old files, has the writer write them
    /// out again, and opens its connection on the new ones.</summary>
    private void WriteOutAgain(FileChange change)
    {
        Log.FilesChanged(_logger, _options.DatabasePath, Describe(change));
        // The writer's connection must be the last one on the old files: closing it then
        // checkpoints them and removes their WAL and shared-memory files from the directory.
        _checkpointConnection.Dispose();
        var recovery = new Recovery(change);
        try
        {
            Enqueue(recovery);
        }
        catch (ObjectDisposedException)
        {
            return; // closing
        }
        if (!recovery.Wait())
        {
            return; // said why; the writer goes on with what it has
        }
        try
        {
            _checkpointConnection = OpenCheckpointConnection(_options);
        }
        catch (SqliteException ex)
        {
            Log.CheckpointFailed(_logger, ex);
        }
    }

    private static string Describe(FileChange change) => change switch
    {
        FileChange.DatabaseGone => "the database file was deleted or moved away",
        FileChange.DatabaseReplaced => "the database file was replaced by another file",
        _ => "its WAL file (the latest decisions) was deleted",
    };

    /// <summary>On the writer thread, outside any transaction.</summary>
    private bool WriteOut(FileChange change)
    {
        string path = _options.DatabasePath;
        try
        {
            if (change == FileChange.WalGone)
            {
                // The database file is still the right one: copy what only the deleted WAL
                // holds into it, then reopen, which starts a new WAL at its path.
                WalFrames(_connection, "TRUNCATE");
                Reopen();
                Log.WalWrittenOut(_logger, path);
                return true;
            }

            // The connection still reads the old file through its descriptor: copy it whole.
            string copy = path + ".recovered";
            File.Delete(copy);
            CreatePrivateFile(copy);
            using (SqliteCommand vacuum = _connection.CreateCommand())
            {
                vacuum.CommandText = "VACUUM INTO $path";
                vacuum.Parameters.AddWithValue("$path", copy);
                vacuum.ExecuteNonQuery();
            }
            long triplets = Schema.Scalar(_connection, "SELECT count(*) FROM triplets");
            _sql.Dispose();
            _connection.Dispose();
            // SQLite leaves a moved database's WAL and shared-memory files where they are (it
            // does not checkpoint into a file it sees moved): beside the copy, SQLite would
            // take that WAL for the copy's and lay the old pages over it. Their content is in the copy.
            File.Delete(path + "-wal");
            File.Delete(path + "-shm");
            string? aside = null;
            if (File.Exists(path))
            {
                // Kept, not overwritten: it may be what an admin meant to put there.
                aside = path + ".replaced-" + DateTime.UtcNow.ToString("yyyyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture);
                File.Move(path, aside);
            }
            File.Move(copy, path);
            Reopen(closed: true);
            if (aside is null)
            {
                Log.DatabaseWrittenOut(_logger, path, triplets);
            }
            else
            {
                Log.DatabaseWrittenOutReplaced(_logger, path, triplets, aside);
            }
            return true;
        }
        catch (Exception ex) when (ex is SqliteException or IOException or UnauthorizedAccessException)
        {
            Log.WriteOutFailed(_logger, path, ex.Message);
            _files = OpenFiles.None; // said once; trying again twice a second would only repeat it
            return false;
        }
    }

    private void Reopen(bool closed = false)
    {
        if (!closed)
        {
            _sql.Dispose();
            _connection.Dispose();
        }
        _connection = OpenWriterConnection(_options, isNew: false);
        _sql = new Statements(_connection);
        _files = OpenFiles.Find(_options.DatabasePath);
    }

    /// <summary>A blocking hand-off: the checkpointer waits on its own thread.</summary>
    private sealed class Recovery(FileChange change) : WorkItem
    {
        private readonly object _gate = new();
        private bool _done;
        private bool _succeeded;

        public override bool Alone => true;

        public override bool IsFinished
        {
            get
            {
                lock (_gate)
                {
                    return _done;
                }
            }
        }

        /// <summary>Waits for the writer; true when the files were written out again.</summary>
        public bool Wait()
        {
            lock (_gate)
            {
                while (!_done)
                {
                    Monitor.Wait(_gate);
                }
                return _succeeded;
            }
        }

        public override void Run(SqliteGreylistStore store) => Finish(store.WriteOut(change));

        public override void Complete()
        {
        }

        public override void Fail(Exception ex) => Finish(false);

        private void Finish(bool succeeded)
        {
            lock (_gate)
            {
                _succeeded |= succeeded;
                _done = true;
                Monitor.PulseAll(_gate);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(4021, LogLevel.Error, "database {Path}: {What} while in use; writing it out again from the open connection", EventName = "DatabaseFilesChanged")]
        public static partial void FilesChanged(ILogger logger, string path, string what);

        [LoggerMessage(4022, LogLevel.Warning, "database {Path} written out again from the open connection ({Triplets} triplets): nothing is lost", EventName = "DatabaseWrittenOut")]
        public static partial void DatabaseWrittenOut(ILogger logger, string path, long triplets);

        [LoggerMessage(4023, LogLevel.Warning, "database {Path} written out again from the open connection ({Triplets} triplets): nothing is lost; the file found in its place is kept as {Aside}", EventName = "DatabaseWrittenOutReplaced")]
        public static partial void DatabaseWrittenOutReplaced(ILogger logger, string path, long triplets, string aside);

        [LoggerMessage(4024, LogLevel.Warning, "database {Path}: the deleted WAL was copied into the database and a new WAL started: nothing is lost", EventName = "WalWrittenOut")]
        public static partial void WalWrittenOut(ILogger logger, string path);

        [LoggerMessage(4025, LogLevel.Critical, "database {Path} could not be written out again ({Reason}): decisions from now on are lost at the next restart; stop the service, put a good copy of the database in place (or none, to start afresh) and start it again", EventName = "WriteOutFailed")]
        public static partial void WriteOutFailed(ILogger logger, string path, string reason);
    }
}

/// <summary>What happened to the files under the store's connections.</summary>
internal enum FileChange
{
    DatabaseGone,
    DatabaseReplaced,
    WalGone,
}

/// <summary>
/// The descriptors SQLite's writer connection holds on the database file and its WAL, found in
/// /proc/self/fd when it opened them. Its link there names the file the descriptor is open on,
/// as the kernel sees it now: "PATH (deleted)" once unlinked or replaced by a rename, another
/// name once moved. Linux only; elsewhere nothing is watched.
/// </summary>
internal sealed class OpenFiles
{
    public static readonly OpenFiles None = new(-1, "", -1, "");

    private readonly int _database;
    private readonly string _databasePath;
    private readonly int _wal;
    private readonly string _walPath;

    private OpenFiles(int database, string databasePath, int wal, string walPath)
    {
        _database = database;
        _databasePath = databasePath;
        _wal = wal;
        _walPath = walPath;
    }

    public static OpenFiles Find(string databasePath)
    {
        const string fds = "/proc/self/fd";
        if (!OperatingSystem.IsLinux() || !Directory.Exists(fds))
        {
            return None;
        }
        string real = RealPath(databasePath);
        string wal = real + "-wal";
        int database = -1, walFd = -1;
        foreach (string entry in Directory.EnumerateFileSystemEntries(fds))
        {
            string? target = Link(entry);
            if (!int.TryParse(Path.GetFileName(entry), out int fd))
            {
                continue;
            }
            if (target == real && database < 0)
            {
                database = fd;
            }
            else if (target == wal && walFd < 0)
            {
                walFd = fd;
            }
        }
        return new OpenFiles(database, real, walFd, wal);
    }

    /// <summary>What changed since <see cref="Find"/>, or null. Two readlink(2) calls.</summary>
    public FileChange? Changed()
    {
        if (_database >= 0 && Link($"/proc/self/fd/{_database}") != _databasePath)
        {
            return File.Exists(_databasePath) ? FileChange.DatabaseReplaced : FileChange.DatabaseGone;
        }
        if (_wal >= 0 && Link($"/proc/self/fd/{_wal}") != _walPath)
        {
            return FileChange.WalGone;
        }
        return null;
    }

    private static string? Link(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The path with every symbolic link in it resolved, as the kernel names an open file.</summary>
    private static string RealPath(string path)
    {
        string resolved = "/";
        int links = 0;
        var parts = new Queue<string>(Path.GetFullPath(path).Split('/', StringSplitOptions.RemoveEmptyEntries));
        while (parts.Count > 0)
        {
            string next = Path.Combine(resolved, parts.Dequeue());
            if (Link(next) is { } target && links++ < 40)
            {
                string full = Path.GetFullPath(target, resolved);
                var rest = parts.ToArray();
                parts.Clear();
                foreach (string part in full.Split('/', StringSplitOptions.RemoveEmptyEntries).Concat(rest))
                {
                    parts.Enqueue(part);
                }
                resolved = "/";
                continue;
            }
            resolved = next;
        }
        return resolved;
    }
}
