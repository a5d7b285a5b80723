using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Configuration;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Platform;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;
using Serilog.Extensions.Logging;

namespace Postgrey.Hosting;

/// <summary>
/// The service's start, in the order postgrey's is: everything that can stop it checked
/// before anything is opened; then, as root where started so, the dbdir, the database, the
/// sockets, the pid file and the host; then the switch to the service account; then the host
/// runs until a stop signal. What is opened here is closed here, once, in reverse order.
/// </summary>
internal static class ServiceStartup
{
    public static int Run(PostgreyOptions options, IReadOnlyList<string> args, ProcessSignals signals)
    {
        if (signals.StopRequested)
        {
            return 0; // stopped before anything was opened
        }
        if (OperatingSystem.IsLinux())
        {
            _ = Libc.SetUmask(Convert.ToUInt32("077", 8)); // postgrey's umask: nothing it creates is readable by others
        }
        if (options.Service.Daemonize && !Daemon.IsDaemon)
        {
            return Daemon.Launch(args);
        }
        if (Daemon.IsDaemon)
        {
            Daemon.StartSession();
        }

        using Serilog.Core.Logger serilog = Logging.PostgreyLogging.CreateLogger(options.Logging);
        using var loggerFactory = new SerilogLoggerFactory(serilog);
        var startup = loggerFactory.CreateLogger("postgrey");
        signals.OnExitAtOnce(() =>
        {
            Log.StoppingAtOnce(startup);
            serilog.Dispose(); // writes out what is queued
        });
        foreach (string warning in options.CompatibilityWarnings)
        {
            Log.Compatibility(startup, warning);
        }

        // Everything that can stop the start is checked before anything is opened.
        var errors = new List<string>();
        var warnings = new List<string>();
        ServiceAccount? account = Privileges.Resolve(options.Service.User, options.Service.Group, errors, warnings);
        foreach (string warning in warnings)
        {
            Log.Compatibility(startup, warning);
        }
        PidFile? pidFile = null;
        try
        {
            pidFile = options.Service.PidFile is { } pidPath ? PidFile.Claim(pidPath) : null;
        }
        catch (IOException ex)
        {
            errors.Add(ex.Message);
        }
        if (errors.Count > 0)
        {
            foreach (string error in errors)
            {
                Console.Error.WriteLine($"ERROR: {error}");
            }
            return 1;
        }

        var whitelistFiles = new WhitelistFiles(options.WhitelistClientFiles, options.WhitelistRecipientFiles, loggerFactory.CreateLogger<WhitelistFiles>());
        var whitelists = new WhitelistProvider(whitelistFiles.Load(requireAll: false)!);

        DatabaseDirectory? dbdir = null;
        IGreylistStore? store = null;
        PolicyListeners? listeners = null;
        Monitoring.MetricsCollector? metrics = null;
        Monitoring.MetricsEndpoint? metricsEndpoint = null;
        try
        {
            if (account is { Uid: not 0 }) // --user=root: no one to guard root's files from
            {
                RuntimeFiles.CheckRuntimeReadable(account);
                // Checked and held by root until the database is open: the account owns it.
                dbdir = DatabaseDirectory.Take(options.Storage.Directory, account, ServiceFiles);
            }
            try
            {
                store = OpenStore(options, loggerFactory);
            }
            catch (StoreLockedException ex)
            {
                Console.Error.WriteLine($"ERROR: locked: {ex.LockPath}");
                return 1;
            }
            catch (PostgreSqlStoreException ex)
            {
                // A wrong password, a missing database or role: the admin must fix it, so say it and stop.
                // (A server that is merely down is not an error: the store answers DUNNO until it is back.)
                Console.Error.WriteLine($"ERROR: {ex.Message}");
                return 1;
            }
            catch (LockFileException ex)
            {
                Console.Error.WriteLine($"ERROR: {ex.Message}");
                return 1;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
            {
                Console.Error.WriteLine($"ERROR: can't open database {options.Storage.DatabasePath}: {ex.Message}");
                return 1;
            }
            dbdir?.GiveToAccount();
            if (signals.StopRequested)
            {
                return 0;
            }

            if (options.Metrics is { } metricsAt)
            {
                // Bound before the policy sockets (as root, if started so): a port in use stops the start.
                metrics = new Monitoring.MetricsCollector();
                metricsEndpoint = Monitoring.MetricsEndpoint.Bind(metricsAt, metrics, loggerFactory.CreateLogger<Monitoring.MetricsEndpoint>());
            }
            listeners = OpenListeners(options, loggerFactory.CreateLogger<PolicyListeners>());
            if (account is not null)
            {
                listeners.GiveSocketFiles(account.Uid, account.Gid); // as Net::Server: --socketmode 0660 shared with Postfix's group
            }
            WhitelistMetrics.Watch(whitelists);
            pidFile?.Write(account);

            // Built as root: building reads the configuration and loads most of what the host needs.
            using IHost host = ServiceHost.Build(options, serilog, store, listeners, whitelists, whitelistFiles);
            if (account is not null)
            {
                RuntimeFiles.LoadProgramAssemblies();
                Privileges.Drop(account);
                Log.RunningAs(startup, account.ToString());
            }

            var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
            SystemdNotifier.Register(lifetime);
            PolicyServer? server = host.Services.GetServices<IHostedService>().OfType<PolicyServer>().FirstOrDefault();
            var health = new Monitoring.HealthCheck(lifetime, () => server?.ExecuteTask, () => server?.StalledMilliseconds ?? 0);
            SystemdWatchdog.Register(lifetime, health.Wedged);
            metricsEndpoint?.Start(health.Problem);
            if (Daemon.IsDaemon)
            {
                lifetime.ApplicationStarted.Register(Daemon.Detach);
            }
            var reloader = host.Services.GetRequiredService<WhitelistReloader>();
            lifetime.ApplicationStarted.Register(() =>
            {
                signals.AttachStop(lifetime.StopApplication);
                signals.AttachReload(reloader.Reload);
            });
            host.Run();
            return 0;
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"ERROR: {ex.Message}");
            if (Daemon.IsDaemon)
            {
                Log.Failed(startup, ex.Message); // once detached, its stderr is /dev/null: say it in syslog too
            }
            return 1;
        }
        finally
        {
            metricsEndpoint?.Dispose();
            metrics?.Dispose();
            listeners?.Dispose();
            (store as IDisposable)?.Dispose(); // after every connection has been answered
            dbdir?.Dispose(); // the start failed before the database was open: the dbdir goes back as it was
            pidFile?.Dispose();
        }
    }

    /// <summary>The files the service creates in --dbdir, and the only ones it gives to the account.</summary>
    private static readonly string[] ServiceFiles =
    [
        SqliteStoreOptions.LockFileName,
        SqliteStoreOptions.DatabaseFileName,
        SqliteStoreOptions.DatabaseFileName + "-wal",
        SqliteStoreOptions.DatabaseFileName + "-shm",
        SqliteStoreOptions.DatabaseFileName + "-journal",
    ];

    /// <summary>The sockets systemd passed (socket activation), or else --inet/--unix bound now.</summary>
    private static PolicyListeners OpenListeners(PostgreyOptions options, Microsoft.Extensions.Logging.ILogger logger)
    {
        IReadOnlyList<System.Net.Sockets.Socket> inherited = SystemdListeners.Take();
        if (inherited.Count == 0)
        {
            return PolicyListeners.Bind(options.Server, logger);
        }
        if (options.Server.Inet.Count > 0 || options.Server.Unix.Count > 0)
        {
            Log.InheritedSockets(logger, inherited.Count);
        }
        return PolicyListeners.Adopt(inherited, logger);
    }

    /// <summary>SQLite in --dbdir (the default), or the PostgreSQL database of --db, shared by
    /// several hosts; --dbdir then still holds postgrey.lock.</summary>
    private static IGreylistStore OpenStore(PostgreyOptions options, ILoggerFactory loggerFactory)
    {
        if (options.PostgreSql is { } shared)
        {
            // The store awaits its round trips to PostgreSQL: let them continue on the socket
            // engine's thread instead of waking a pool thread each (read once, when the first
            // asynchronous socket operation starts the engine: before the store opens). The
            // service's own sockets do not use the engine under epoll; Kestrel (--metrics)
            // schedules its work to its own queues either way.
            Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
            // The epoll transport hands each answer to its loop at once: let the writer do that.
            return PostgreSqlGreylistStore.Open(shared with { ContinueOnWriterThread = PolicyServer.UsesEpoll(options.Server) }, loggerFactory.CreateLogger<PostgreSqlGreylistStore>(), options.Storage.LockPath);
        }
        // The epoll transport hands each answer to its loop at once: let the writer do that.
        return SqliteGreylistStore.Open(options.Storage with { ContinueOnWriterThread = PolicyServer.UsesEpoll(options.Server) }, loggerFactory.CreateLogger<SqliteGreylistStore>());
    }
}

internal static partial class Log
{
    [LoggerMessage(5001, LogLevel.Warning, "{Warning}", EventName = "CompatibilityFlag")]
    public static partial void Compatibility(Microsoft.Extensions.Logging.ILogger logger, string warning);

    [LoggerMessage(5002, LogLevel.Information, "running as {Account}", EventName = "RunningAs")]
    public static partial void RunningAs(Microsoft.Extensions.Logging.ILogger logger, string account);

    [LoggerMessage(5003, LogLevel.Warning, "second stop signal: stopping at once", EventName = "StoppingAtOnce")]
    public static partial void StoppingAtOnce(Microsoft.Extensions.Logging.ILogger logger);

    [LoggerMessage(5005, LogLevel.Error, "stopped: {Reason}", EventName = "Failed")]
    public static partial void Failed(Microsoft.Extensions.Logging.ILogger logger, string reason);

    [LoggerMessage(5004, LogLevel.Information, "{Count} listening socket(s) passed by systemd: --inet/--unix are not bound", EventName = "InheritedSockets")]
    public static partial void InheritedSockets(Microsoft.Extensions.Logging.ILogger logger, int count);
}
