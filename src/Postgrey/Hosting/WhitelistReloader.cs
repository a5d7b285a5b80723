using Microsoft.Extensions.Logging;
using Postgrey.Core.Whitelists;

namespace Postgrey.Hosting;

/// <summary>SIGHUP re-reads every whitelist file, as in postgrey; if one cannot be read, the lists
/// in force are kept. One reload at a time.</summary>
internal sealed partial class WhitelistReloader(WhitelistFiles files, WhitelistProvider provider, ILogger<WhitelistReloader> logger) : IDisposable
{
    private readonly SemaphoreSlim _reloading = new(1, 1);

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

    public void Dispose() => _reloading.Dispose();

    private static partial class Log
    {
        [LoggerMessage(5201, LogLevel.Warning, "HUP received: reloading whitelists...", EventName = "WhitelistReloading")]
        public static partial void Reloading(ILogger logger);

        [LoggerMessage(5202, LogLevel.Error, "whitelists not reloaded: a file could not be read; the previous lists stay in force", EventName = "WhitelistReloadFailed")]
        public static partial void ReloadFailed(ILogger logger);
    }
}
