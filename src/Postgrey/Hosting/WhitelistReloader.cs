using Microsoft.Extensions.Logging;
using Postgrey.Core.Whitelists;

namespace Postgrey.Hosting;

/// <summary>
/// SIGHUP re-reads every whitelist file, as in postgrey; if one cannot be read, the lists in
/// force are kept. Reloads are coalesced: one runs, at most one more waits, and it reads the
/// files after every HUP it stands for. They run on a thread of their own, so a storm of HUPs
/// blocks no thread-pool thread (each signal arrives on one) and cannot starve what the pool
/// runs: answers of the sockets transport, the stop.
/// </summary>
internal sealed partial class WhitelistReloader(WhitelistFiles files, WhitelistProvider provider, ILogger<WhitelistReloader> logger)
{
    private const int Idle = 0;
    private const int Running = 1;
    private const int RunningAndPending = 2;

    private int _state;

    /// <summary>Asks for a reload and returns at once.</summary>
    public void Reload()
    {
        while (true)
        {
            int state = Volatile.Read(ref _state);
            if (state == RunningAndPending)
            {
                return; // the pending one starts after this HUP: it reads what this one would
            }
            if (Interlocked.CompareExchange(ref _state, state + 1, state) == state)
            {
                if (state == Idle)
                {
                    new Thread(Run) { IsBackground = true, Name = "postgrey-reload" }.Start();
                }
                return;
            }
        }
    }

    private void Run()
    {
        do
        {
            try
            {
                ReloadNow();
            }
            catch (Exception ex)
            {
                Log.ReloadCrashed(logger, ex); // and the next HUP tries again
            }
        }
        while (Interlocked.Decrement(ref _state) != Idle);
    }

    private void ReloadNow()
    {
        Log.Reloading(logger);
        WhitelistSet? next = files.Load(requireAll: true);
        if (next is null)
        {
            WhitelistMetrics.Reloaded(ok: false);
            Log.ReloadFailed(logger);
            return;
        }
        provider.Replace(next);
        WhitelistMetrics.Reloaded(ok: true);
    }

    private static partial class Log
    {
        [LoggerMessage(5201, LogLevel.Warning, "HUP received: reloading whitelists...", EventName = "WhitelistReloading")]
        public static partial void Reloading(ILogger logger);

        [LoggerMessage(5202, LogLevel.Error, "whitelists not reloaded: a file could not be read; the previous lists stay in force", EventName = "WhitelistReloadFailed")]
        public static partial void ReloadFailed(ILogger logger);

        [LoggerMessage(5203, LogLevel.Error, "whitelists not reloaded; the previous lists stay in force", EventName = "WhitelistReloadCrashed")]
        public static partial void ReloadCrashed(ILogger logger, Exception exception);
    }
}
