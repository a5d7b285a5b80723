using System.Globalization;

namespace Postgrey.Platform;

/// <summary>The account a root-started service switches to (--user/--group).</summary>
internal sealed record ServiceAccount(string User, uint Uid, string? Group, uint Gid)
{
    public override string ToString() => Group is null ? $"{User} (uid {Uid}, gid {Gid})" : $"{User} (uid {Uid}), group {Group} (gid {Gid})";
}

/// <summary>
/// postgrey's privilege drop: started as root, it binds its sockets and opens its database
/// first, then runs as --user (default postgrey) and --group (default: that user's group).
/// Not started as root: nothing to drop, the flags change nothing (as with Net::Server).
/// </summary>
internal static class Privileges
{
    public const string DefaultUser = "postgrey";

    public static bool IsRoot => OperatingSystem.IsLinux() && Libc.GetEffectiveUserId() == 0;

    /// <summary>Looks the account up before anything is opened, so that a typo stops the start.
    /// Returns null when there is nothing to drop. The default user missing is a warning (the
    /// service stays root, as when it is started from a shell for a try); a named one, an error.</summary>
    public static ServiceAccount? Resolve(string? user, string? group, List<string> errors, List<string> warnings)
    {
        ArgumentNullException.ThrowIfNull(errors);
        ArgumentNullException.ThrowIfNull(warnings);
        if (!IsRoot)
        {
            return null;
        }
        string name = user ?? DefaultUser;
        (uint Uid, uint Gid)? found = Libc.FindUser(name);
        if (found is null && uint.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out uint numericUid))
        {
            found = (numericUid, numericUid);
        }
        if (found is not { } account)
        {
            if (user is null)
            {
                warnings.Add($"started as root and there is no user '{DefaultUser}' to run as: running as root (give --user=USER)");
            }
            else
            {
                errors.Add($"--user={user}: no such user");
            }
            return null;
        }
        uint gid = account.Gid;
        if (group is not null)
        {
            uint? foundGroup = Libc.FindGroup(group);
            if (foundGroup is null && uint.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out uint numericGid))
            {
                foundGroup = numericGid;
            }
            if (foundGroup is not { } g)
            {
                errors.Add($"--group={group}: no such group");
                return null;
            }
            gid = g;
        }
        return new ServiceAccount(name, account.Uid, group, gid);
    }

    /// <summary>setgroups, setgid, setuid, in that order (the other order would leave root's
    /// groups), then checks that root cannot be regained.</summary>
    public static void Drop(ServiceAccount account)
    {
        ArgumentNullException.ThrowIfNull(account);
        if (Libc.SetGroups(1, [account.Gid]) != 0)
        {
            throw new InvalidOperationException($"setgroups({account.Gid}) failed: {Libc.LastErrorMessage}");
        }
        if (Libc.SetGroupId(account.Gid) != 0)
        {
            throw new InvalidOperationException($"setgid({account.Gid}) failed: {Libc.LastErrorMessage}");
        }
        if (Libc.SetUserId(account.Uid) != 0)
        {
            throw new InvalidOperationException($"setuid({account.Uid}) failed: {Libc.LastErrorMessage}");
        }
        if (account.Uid != 0 && Libc.SetUserId(0) == 0)
        {
            throw new InvalidOperationException("root could be regained after setuid: refusing to run");
        }
    }
}
