using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;
using Postgrey.Server;
using Serilog;

namespace Postgrey.Hosting;

/// <summary>The composition: which service gets which options and parts. The parts opened
/// before the host (store, sockets, whitelists) are handed in; their owner is <see cref="ServiceStartup"/>.</summary>
internal static class ServiceHost
{
    public static IHost Build(PostgreyOptions options, Serilog.ILogger serilog, IGreylistStore store, PolicyListeners listeners, WhitelistProvider whitelists, WhitelistFiles whitelistFiles)
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
        if (options.Identity is { } identity)
        {
            // The engine takes it when it is there (its constructor's optional parameter).
            builder.Services.AddSingleton(identity);
            builder.Services.AddSingleton<Postgrey.Core.Identity.IKeyIdentityResolver, Postgrey.Identity.IdentityResolver>();
        }
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
}
