using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Hosting;
using Postgrey.Server;
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
        return Run(options);
    }

    private static int Run(PostgreyOptions options)
    {
        using Serilog.Core.Logger serilog = CreateLogger(options.Logging);
        using var loggerFactory = new SerilogLoggerFactory(serilog);
        var startup = loggerFactory.CreateLogger("postgrey");
        foreach (string warning in options.CompatibilityWarnings)
        {
            Log.Compatibility(startup, warning);
        }

        var whitelistFiles = new WhitelistFiles(options.WhitelistClientFiles, options.WhitelistRecipientFiles, loggerFactory.CreateLogger<WhitelistFiles>());
        var whitelists = new WhitelistProvider(whitelistFiles.Load(requireAll: false)!);

        SqliteGreylistStore store;
        try
        {
            store = SqliteGreylistStore.Open(options.Storage, loggerFactory.CreateLogger<SqliteGreylistStore>());
        }
        catch (StoreLockedException ex)
        {
            Console.Error.WriteLine($"ERROR: locked: {ex.LockPath}");
            return 1;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            Console.Error.WriteLine($"ERROR: can't open database {options.Storage.DatabasePath}: {ex.Message}");
            return 1;
        }

        try
        {
            using IHost host = BuildHost(options, serilog, store, whitelists, whitelistFiles);
            host.Run();
            return 0;
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"ERROR: {ex.Message}");
            return 1;
        }
        finally
        {
            store.Dispose(); // after every connection has been answered
        }
    }

    private static IHost BuildHost(PostgreyOptions options, Serilog.ILogger serilog, SqliteGreylistStore store, WhitelistProvider whitelists, WhitelistFiles whitelistFiles)
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
        builder.Services.AddHostedService<PolicyServer>();
        builder.Services.AddHostedService(sp => new MaintenanceService(
            store,
            options.Greylist,
            options.MaintenanceInterval,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<MaintenanceService>>()));
        builder.Services.AddHostedService<WhitelistReloadService>();
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
            .WriteTo.Sink(new BufferedConsoleSink(new NetServerLogFormatter()))
            .CreateLogger();
    }
}

internal static partial class Log
{
    [LoggerMessage(5001, LogLevel.Warning, "{Warning}", EventName = "CompatibilityFlag")]
    public static partial void Compatibility(Microsoft.Extensions.Logging.ILogger logger, string warning);
}
