namespace Postgrey.Platform;

/// <summary>
/// Root's work in --dbdir, which the service account owns and so controls: it can plant a
/// symbolic or hard link there (<c>postgrey.lock -> /etc/shadow</c>) for the next root start to
/// follow. So, started as root:
/// <list type="number">
/// <item>every directory above the dbdir, as given and as resolved, must be root's and writable
/// by nobody else (OpenSSH's StrictModes reasoning): then no one but root can swap the dbdir
/// itself for a link, and a dbdir given as a link is followed only because root made it;</item>
/// <item>the dbdir is taken back (owner root, no group or other write) for the time root works in
/// it, so that nothing in it can change meanwhile;</item>
/// <item>each file the service uses there must be absent or a regular file with one link; a link
/// or anything else is refused, not followed;</item>
/// <item>once the database is open, those files (only those) and the dbdir are given to the
/// account through descriptors opened without following links (fchown), never by path.</item>
/// </list>
/// </summary>
internal sealed class DatabaseDirectory : IDisposable
{
    private const uint GroupOrOtherWrite = 0x12; // 0022
    private const uint Sticky = 0x200; // 01000

    private readonly string _path;
    private readonly ServiceAccount _account;
    private readonly IReadOnlyList<string> _fileNames;
    private readonly FileFacts _before;
    private int _fd;

    private DatabaseDirectory(string path, ServiceAccount account, IReadOnlyList<string> fileNames, int fd, FileFacts before)
    {
        _path = path;
        _account = account;
        _fileNames = fileNames;
        _fd = fd;
        _before = before;
    }

    /// <summary>
    /// Creates the dbdir if it is missing, checks it and takes it back for root until
    /// <see cref="GiveToAccount"/> (or, if the start fails first, gives it back as it was).
    /// <paramref name="fileNames"/>: the files the service itself creates there.
    /// </summary>
    public static DatabaseDirectory Take(string directory, ServiceAccount account, IReadOnlyList<string> fileNames)
    {
        ArgumentNullException.ThrowIfNull(account);
        ArgumentNullException.ThrowIfNull(fileNames);
        string given = Path.GetFullPath(directory);
        Directory.CreateDirectory(given);
        string real = Libc.Resolve(given) ?? throw new IOException($"--dbdir={directory}: {Libc.LastErrorMessage}");
        // Through the path as written: whoever may write a directory on it can put a link there.
        CheckAncestors(directory, given, account);
        // And through the directories the links lead to.
        CheckAncestors(directory, real, account);

        int fd = Libc.OpenAt(Libc.CurrentDirectory, real, Libc.OpenReadOnly | Libc.OpenDirectory | Libc.OpenNoFollow | Libc.OpenCloseOnExec, 0);
        if (fd < 0)
        {
            throw new IOException($"--dbdir={directory}: can't open {real}: {Libc.LastErrorMessage}");
        }
        DatabaseDirectory taken;
        try
        {
            FileFacts before = Libc.Describe(fd, "") ?? throw new IOException($"--dbdir={directory}: {Libc.LastErrorMessage}");
            if (Libc.ChangeOwner(fd, 0, 0) != 0 || Libc.ChangeMode(fd, before.Permissions & ~GroupOrOtherWrite) != 0)
            {
                throw new IOException($"--dbdir={directory}: can't take {real} back for root: {Libc.LastErrorMessage}");
            }
            taken = new DatabaseDirectory(real, account, fileNames, fd, before);
        }
        catch
        {
            _ = Libc.Close(fd);
            throw;
        }
        try
        {
            taken.CheckFiles();
        }
        catch
        {
            taken.Dispose();
            throw;
        }
        return taken;
    }

    /// <summary>Each directory from / down to the dbdir's parent: root's and writable only by
    /// root, or sticky (/tmp) with the entry below it root's, so no one else can rename it.</summary>
    private static void CheckAncestors(string flag, string path, ServiceAccount account)
    {
        string? parent = Path.GetDirectoryName(path);
        string child = path;
        while (parent is not null)
        {
            // Followed on purpose: a link on the way was made in a directory checked above it.
            FileFacts facts = Describe(parent + "/.");
            bool safe = facts.Uid == 0 && ((facts.Permissions & GroupOrOtherWrite) == 0
                || ((facts.Permissions & Sticky) != 0 && Describe(child).Uid == 0));
            if (!safe)
            {
                throw new IOException(
                    $"--dbdir={flag}: {parent} is {(facts.Uid == 0 ? "writable by others" : $"owned by uid {facts.Uid}")}: whoever may write it "
                    + $"(such as {account.User}) could replace the database directory with a link for root to follow; "
                    + "refusing to start as root (use a dbdir whose parent directories only root can write)");
            }
            child = parent;
            parent = Path.GetDirectoryName(parent);
        }
    }

    private static FileFacts Describe(string path) =>
        Libc.Describe(Libc.CurrentDirectory, path) ?? throw new IOException($"{path}: {Libc.LastErrorMessage}");

    /// <summary>Each service file: absent, or a regular file with one link (a hard link to a
    /// file elsewhere would be given away with it).</summary>
    private void CheckFiles()
    {
        foreach (string name in _fileNames)
        {
            if (Libc.Describe(_fd, name) is not { } facts)
            {
                continue; // absent (ENOENT): created by root below, in a directory only root can write now
            }
            string path = Path.Combine(_path, name);
            if (!facts.IsRegularFile)
            {
                throw new IOException($"{path} is {facts.Kind}, not a regular file: refusing to open it as root "
                    + $"(it may have been planted by {_account.User}, who owns {_path}); remove it");
            }
            if (facts.Links != 1)
            {
                throw new IOException($"{path} has {facts.Links} hard links: refusing to open it as root "
                    + $"(it may be another file linked in by {_account.User}); remove it");
            }
        }
    }

    /// <summary>Gives the service's files and then the dbdir (with its mode as it was) to the
    /// account, by descriptor.</summary>
    public void GiveToAccount()
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        foreach (string name in _fileNames)
        {
            int file = Libc.OpenAt(_fd, name, Libc.OpenReadOnly | Libc.OpenNoFollow | Libc.OpenNonBlocking | Libc.OpenCloseOnExec, 0);
            if (file < 0)
            {
                continue; // not created (SQLite removes an empty -journal, for one)
            }
            try
            {
                FileFacts? facts = Libc.Describe(file, "");
                if (facts is not { IsRegularFile: true, Links: 1 })
                {
                    throw new IOException($"{Path.Combine(_path, name)} is not a regular file with one link: not giving it to {_account.User}");
                }
                if (Libc.ChangeOwner(file, _account.Uid, _account.Gid) != 0)
                {
                    throw new IOException($"can't give {Path.Combine(_path, name)} to {_account.User}: {Libc.LastErrorMessage}");
                }
            }
            finally
            {
                _ = Libc.Close(file);
            }
        }
        if (Libc.ChangeOwner(_fd, _account.Uid, _account.Gid) != 0 || Libc.ChangeMode(_fd, _before.Permissions) != 0)
        {
            throw new IOException($"can't give {_path} to {_account.User}: {Libc.LastErrorMessage}");
        }
        Close();
    }

    /// <summary>If the start failed before <see cref="GiveToAccount"/>, the dbdir goes back to whom
    /// it belonged, with its mode.</summary>
    public void Dispose()
    {
        if (_fd < 0)
        {
            return;
        }
        _ = Libc.ChangeOwner(_fd, _before.Uid, _before.Gid);
        _ = Libc.ChangeMode(_fd, _before.Permissions);
        Close();
    }

    private void Close()
    {
        _ = Libc.Close(_fd);
        _fd = -1;
    }
}
