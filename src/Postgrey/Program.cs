using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Hosting;
using Postgrey.Platform;
using Postgrey.Server;
using Postgrey.Storage.PostgreSql;
using Postgrey.Storage.Sqlite;
using Serilog;
using Serilog.Events;
using Serilog.Extensions.Logging;

namespace Postgrey;

internal static class Program
{
    public static int Main(string[] args)
    {
        var commandLine = new PostgreyCommandLine();
        var parsed = commandLine.Parse(args);
        if (PostgreyCommandLine.IsHelp(parsed) || parsed.GetValue(commandLine.Man))
        {
            return PostgreyCommandLine.PrintHelp(commandLine.Parse(["--help"]));
        }
        if (parsed.GetValue(commandLine.Version))
        {
            Console.Out.WriteLine($"postgrey {VersionInfo.PostgreyCompatible} (Postgrey for .NET {VersionInfo.Product})");
            return 0;
        }
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
            {
                Console.Error.WriteLine($"ERROR: {error.Message}");
            }
            return 1;
        }
        PostgreyOptions? options = OptionsMapper.Map(commandLine.Read(parsed), out var problems);
        if (options is null)
        {
            foreach (string problem in problems)
            {
                Console.Error.WriteLine($"ERROR: {problem}");
            }
            return 1;
        }
        return Run(options, args);
    }

    private static int Run(PostgreyOptions options, IReadOnlyList<string> args)
    {
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

        using Serilog.Core.Logger serilog = CreateLogger(options.Logging);
        using var loggerFactory = new SerilogLoggerFactory(serilog);
        var startup = loggerFactory.CreateLogger("postgrey");
        using var signals = new ProcessSignals(() =>
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

        IGreylistStore store;
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
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            Console.Error.WriteLine($"ERROR: can't open database {options.Storage.DatabasePath}: {ex.Message}");
            return 1;
        }

        PolicyListeners? listeners = null;
        try
        {
            if (account is not null)
            {
                Privileges.GiveDirectory(options.Storage.Directory, account);
            }
            listeners = OpenListeners(options, loggerFactory.CreateLogger<PolicyListeners>());
            if (pidFile is not null)
            {
                pidFile.Write();
                if (account is not null)
                {
                    Privileges.Chown(pidFile.Path, account);
                }
            }
            if (account is not null)
            {
                Privileges.Drop(account);
                Log.RunningAs(startup, account.ToString());
            }

            using IHost host = BuildHost(options, serilog, store, listeners, whitelists, whitelistFiles);
            var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
            SystemdNotifier.Register(lifetime);
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
            listeners?.Dispose();
            ((IDisposable)store).Dispose(); // after every connection has been answered
            pidFile?.Dispose();
        }
    }

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
            return PostgreSqlGreylistStore.Open(shared, loggerFactory.CreateLogger<PostgreSqlGreylistStore>(), options.Storage.LockPath);
        }
        // The epoll transport hands each answer to its loop at once: let the writer do that.
        return SqliteGreylistStore.Open(options.Storage with { ContinueOnWriterThread = PolicyServer.UsesEpoll(options.Server) }, loggerFactory.CreateLogger<SqliteGreylistStore>());
    }

    private static IHost BuildHost(PostgreyOptions options, Serilog.ILogger serilog, IGreylistStore store, PolicyListeners listeners, WhitelistProvider whitelists, WhitelistFiles whitelistFiles)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            Args = [],
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Logging.ClearProviders();
        builder.Services.AddSerilog(serilog, dispose: false);
        builder.Services.AddSystemd();
        builder.Services.AddWindowsService(o => o.ServiceName = "postgrey");
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));

        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(options.Greylist);
        builder.Services.AddSingleton(options.Server);
        builder.Services.AddSingleton<IGreylistStore>(store);
        builder.Services.AddSingleton(whitelists);
        builder.Services.AddSingleton(whitelistFiles);
        builder.Services.AddSingleton<GreylistEngine>();
        builder.Services.AddSingleton(sp => new PolicyConnectionHandler(
            sp.GetRequiredService<GreylistEngine>(),
            options.Server.Limits,
            options.Server.Exim,
            sp.GetRequiredService<ILogger<PolicyConnectionHandler>>()));
        builder.Services.AddSingleton(listeners);
        builder.Services.AddHostedService<PolicyServer>();
        builder.Services.AddHostedService(sp => new MaintenanceService(
            store,
            options.Greylist,
            options.MaintenanceInterval,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<MaintenanceService>>()));
        builder.Services.AddSingleton<WhitelistReloader>();
        return builder.Build();
    }

    private static Serilog.Core.Logger CreateLogger(LoggingOptions options)
    {
        // postgrey's levels: -q shows its level 1 (warnings, "whitelisted", "cleaning"), the
        // default adds the action= lines, -v adds our diagnostics.
        LogEventLevel level = options.Verbosity switch
        {
            Verbosity.Quiet => LogEventLevel.Warning,
            Verbosity.Verbose => LogEventLevel.Debug,
            _ => LogEventLevel.Information,
        };
        return new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .WriteTo.Sink(CreateSink(options))
            .CreateLogger();
    }

    /// <summary>-d/--syslog: the syslog socket, as postgrey. A Windows service: the event log. Under systemd (its journal holds our
    /// stdout): journald's own socket, so that each line keeps its priority and facility; if that
    /// is out of reach, stdout with a priority prefix. Else the console, as postgrey.</summary>
    private static Serilog.Core.ILogEventSink CreateSink(LoggingOptions options)
    {
        if (options.Syslog)
        {
            return new SyslogSink(options.SyslogSocket, options.SyslogFacility, "postgrey");
        }
        if (OperatingSystem.IsWindows() && Microsoft.Extensions.Hosting.WindowsServices.WindowsServiceHelpers.IsWindowsService())
        {
            return new EventLogSink();
        }
        if (Environment.GetEnvironmentVariable("JOURNAL_STREAM") is { Length: > 0 })
        {
            var journal = new JournalSink(JournalSink.DefaultPath, options.SyslogFacility, "postgrey", TextWriter.Null);
            if (journal.Connected)
            {
                return journal;
            }
            journal.Dispose();
            return new ConsoleSink(levelPrefix: true);
        }
        return new ConsoleSink();
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
