using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Whitelists;

namespace Postgrey.Hosting;

/// <summary>SIGHUP re-reads every whitelist file, as in postgrey; if one cannot be read, the lists
/// in force are kept.</summary>
internal sealed partial class WhitelistReloadService(WhitelistFiles files, WhitelistProvider provider, ILogger<WhitelistReloadService> logger) : IHostedService, IDisposable
{
    private PosixSignalRegistration? _registration;
    private readonly SemaphoreSlim _reloading = new(1, 1);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsWindows())
        {
            _registration = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true; // SIGHUP reloads; it must not end the process
                _ = Task.Run(Reload, CancellationToken.None);
            });
        }
        return Task.CompletedTask;
    }

    public void Reload()
    {
        _reloading.Wait();
        try
        {
            Log.Reloading(logger);
            WhitelistSet? next = files.Load(requireAll: true);
            if (next is null)
            {
                Log.ReloadFailed(logger);
                return;
            }
            provider.Replace(next);
        }
        finally
        {
            _reloading.Release();
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose()
    {
        _registration?.Dispose();
        _reloading.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(5201, LogLevel.Warning, "HUP received: reloading whitelists...", EventName = "WhitelistReloading")]
        public static partial void Reloading(ILogger logger);

        [LoggerMessage(5202, LogLevel.Error, "whitelists not reloaded: a file could not be read; the previous lists stay in force", EventName = "WhitelistReloadFailed")]
        public static partial void ReloadFailed(ILogger logger);
    }
}
