using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Postgrey.Server;

/// <summary>
/// The listening sockets: bound from --inet/--unix, or handed over already listening by the
/// service manager (systemd socket activation). Binding is separate from serving so that the
/// service can bind as root, then drop privileges, then serve. Dispose closes them and removes
/// the socket files this process created (never one systemd owns).
/// </summary>
public sealed partial class PolicyListeners : IDisposable
{
    private readonly List<Socket> _sockets = [];
    private readonly List<string> _socketFiles = [];
    private readonly ILogger _logger;

    private PolicyListeners(ILogger logger) => _logger = logger;

    public IReadOnlyList<Socket> Sockets => _sockets;

    /// <summary>Binds every --inet and --unix address; all or none (a failure closes the rest).</summary>
    public static PolicyListeners Bind(ServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var listeners = new PolicyListeners(logger);
        try
        {
            foreach (InetEndpoint endpoint in options.Inet)
            {
                listeners.BindInet(endpoint, options.ListenQueueSize);
            }
            foreach (string path in options.Unix)
            {
                listeners.BindUnix(path, options);
            }
            if (listeners._sockets.Count == 0)
            {
                throw new IOException("no socket could be bound");
            }
        }
        catch
        {
            listeners.Dispose();
            throw;
        }
        return listeners;
    }

    /// <summary>Takes sockets that already listen (from systemd); they are served as they are.</summary>
    public static PolicyListeners Adopt(IEnumerable<Socket> sockets, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(sockets);
        ArgumentNullException.ThrowIfNull(logger);
        var listeners = new PolicyListeners(logger);
        foreach (Socket socket in sockets)
        {
            listeners._sockets.Add(socket);
            ServerLog.ListeningInherited(logger, Describe(socket.LocalEndPoint));
        }
        return listeners;
    }

    private void BindInet(InetEndpoint endpoint, int? backlog)
    {
        var socket = new Socket(endpoint.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.EndPoint.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }
            AllowTimeWait(socket);
            socket.Bind(endpoint.EndPoint);
            Listen(socket, backlog);
        }
        catch (SocketException ex) when (endpoint.Optional && ex.SocketErrorCode is SocketError.AddressNotAvailable or SocketError.AddressFamilyNotSupported)
        {
            socket.Dispose();
            ServerLog.OptionalBindSkipped(_logger, endpoint.ToString(), ex.Message);
            return;
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new IOException($"can't bind to {endpoint}: {ex.Message}", ex);
        }
        _sockets.Add(socket);
        ServerLog.Listening(_logger, socket.LocalEndPoint!.ToString()!);
    }

    /// <summary>
    /// Restarting right after a stop must not fail on connections still in TIME_WAIT: that is
    /// SO_REUSEADDR. .NET's ReuseAddress also sets SO_REUSEPORT on Linux, with which a second
    /// instance (on another dbdir) binds the same port and the kernel splits the clients
    /// between two greylists; so on Linux SO_REUSEADDR alone is set, and a port in use is an
    /// error as with postgrey. Elsewhere nothing is set (on Windows SO_REUSEADDR would even
    /// let another process take the port over).
    /// </summary>
    private static void AllowTimeWait(Socket socket)
    {
        if (OperatingSystem.IsLinux())
        {
            const int SolSocket = 1;
            const int SoReuseAddress = 2;
            socket.SetRawSocketOption(SolSocket, SoReuseAddress, BitConverter.GetBytes(1));
        }
    }

    private void BindUnix(string path, ServerOptions options)
    {
        RemoveStaleSocket(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            _socketFiles.Add(path);
            if (OperatingSystem.IsLinux())
            {
                SocketFile.Change(path, (uint)options.SocketMode, owner: null);
            }
            else if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(path, options.SocketMode);
            }
            Listen(socket, options.ListenQueueSize);
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new IOException($"can't bind to unix socket {path}: {ex.Message}", ex);
        }
        _sockets.Add(socket);
        ServerLog.Listening(_logger, "unix:" + path);
    }

    /// <summary>
    /// Started as root with --user/--group, Net::Server gives the socket files to that user and
    /// group, so that a --socketmode=0660 socket is shared with Postfix's group: the same here.
    /// </summary>
    public void GiveSocketFiles(uint uid, uint gid)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        foreach (string path in _socketFiles)
        {
            SocketFile.Change(path, mode: null, owner: (uid, gid));
        }
    }

    /// <summary>A socket file left by a dead process (nobody accepts on it) is removed. One that
    /// still answers belongs to a running server and is an error, not something to steal; and
    /// anything else at the path (a file, a link, a directory) is an error too: --unix names a
    /// socket, and a typo must not delete a file.</summary>
    private static void RemoveStaleSocket(string path)
    {
        if (OperatingSystem.IsLinux())
        {
            if (SocketFile.Kind(path) is not { } kind)
            {
                return; // nothing there
            }
            if (kind != SocketFile.SocketKind)
            {
                throw new IOException($"--unix={path}: {path} exists and is {kind}, not a socket: refusing to replace it");
            }
        }
        else if (!File.Exists(path))
        {
            return;
        }
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new IOException($"unix socket {path} is in use by another process");
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused || !OperatingSystem.IsLinux())
            {
                // nobody listens: stale
            }
            catch (SocketException ex)
            {
                throw new IOException($"--unix={path}: can't tell whether the socket is in use ({ex.Message}): refusing to replace it", ex);
            }
        }
        File.Delete(path);
    }

    private static void Listen(Socket socket, int? backlog)
    {
        if (backlog is int size)
        {
            socket.Listen(size);
        }
        else
        {
            socket.Listen();
        }
    }

    private static string Describe(EndPoint? endPoint) => endPoint switch
    {
        UnixDomainSocketEndPoint unix => "unix:" + unix,
        null => "?",
        _ => endPoint.ToString() ?? "?",
    };

    /// <summary>Closes every socket (new connections are refused from here on, or queued by
    /// systemd for the next start when inherited) and removes our socket files.</summary>
    public void Dispose()
    {
        foreach (Socket socket in _sockets)
        {
            socket.Dispose();
        }
        foreach (string path in _socketFiles)
        {
            try
            {
                File.Delete(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // gone already, or not ours to delete any more after dropping privileges
                ServerLog.SocketFileNotRemoved(_logger, path, ex.Message);
            }
        }
        _socketFiles.Clear();
    }

    /// <summary>The socket file, looked at and changed without following a link: its
    /// directory may be writable by others (Postfix's private/), and root must not chmod or
    /// chown whatever a link put there points to.</summary>
    private static partial class SocketFile
    {
        public const string SocketKind = "a socket";

        private const int CurrentDirectory = -100; // AT_FDCWD
        private const int SymlinkNoFollow = 0x100; // AT_SYMLINK_NOFOLLOW
        private const int EmptyPath = 0x1000; // AT_EMPTY_PATH
        private const int OpenPath = 0x200000; // O_PATH
        private const int OpenCloseOnExec = 0x80000; // O_CLOEXEC
        private static int OpenNoFollow => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x8000 : 0x20000;

        /// <summary>What is at <paramref name="path"/> ("a socket", "a regular file", ...), or null if nothing.</summary>
        public static string? Kind(string path)
        {
            byte[] buffer = new byte[256];
            if (Statx(CurrentDirectory, path, SymlinkNoFollow, 0x7ff, buffer) != 0)
            {
                int error = Marshal.GetLastPInvokeError();
                return error == 2 /* ENOENT */ ? null : throw new IOException($"--unix={path}: {Marshal.GetPInvokeErrorMessage(error)}");
            }
            return Describe(BitConverter.ToUInt16(buffer, 28));
        }

        private static string Describe(uint mode) => (mode & 0xF000) switch
        {
            0xC000 => SocketKind,
            0x8000 => "a regular file",
            0x4000 => "a directory",
            0xA000 => "a symbolic link",
            0x1000 => "a FIFO",
            _ => "a special file",
        };

        /// <summary>chmod and/or chown of the socket we bound, through an O_PATH descriptor of it.</summary>
        public static void Change(string path, uint? mode, (uint Uid, uint Gid)? owner)
        {
            int fd = Open(path, OpenPath | OpenNoFollow | OpenCloseOnExec);
            if (fd < 0)
            {
                throw new IOException($"unix socket {path}: {Marshal.GetLastPInvokeErrorMessage()}");
            }
            try
            {
                byte[] buffer = new byte[256];
                if (Statx(fd, "", EmptyPath, 0x7ff, buffer) != 0)
                {
                    throw new IOException($"unix socket {path}: {Marshal.GetLastPInvokeErrorMessage()}");
                }
                string kind = Describe(BitConverter.ToUInt16(buffer, 28));
                if (kind != SocketKind)
                {
                    throw new IOException($"unix socket {path} was replaced by {kind}: not changing it");
                }
                // An O_PATH descriptor has no fchmod; its /proc/self/fd link reaches the same inode.
                if (mode is uint m && ChangeMode($"/proc/self/fd/{fd}", m) != 0)
                {
                    throw new IOException($"can't set the mode of unix socket {path}: {Marshal.GetLastPInvokeErrorMessage()}");
                }
                if (owner is var (uid, gid) && ChangeOwner(fd, "", uid, gid, EmptyPath) != 0)
                {
                    throw new IOException($"can't give unix socket {path} to uid {uid}, gid {gid}: {Marshal.GetLastPInvokeErrorMessage()}");
                }
            }
            finally
            {
                _ = Close(fd);
            }
        }

        [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int Statx(int directoryFd, string path, int flags, uint mask, [Out] byte[] buffer);

        [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int ChangeMode(string path, uint mode);

        [LibraryImport("libc", EntryPoint = "fchownat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        private static partial int ChangeOwner(int directoryFd, string path, uint uid, uint gid, int flags);

        [LibraryImport("libc", EntryPoint = "close")]
        private static partial int Close(int fd);
    }
}
