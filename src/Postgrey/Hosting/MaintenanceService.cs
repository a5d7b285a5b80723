using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Storage;

namespace Postgrey.Hosting;

/// <summary>
/// Deletes expired triplets and auto-whitelist entries every interval (an hour by default), at
/// any hour: the store does it in small steps between decisions, so answers never wait on it
/// (postgrey blocks every request while it sweeps, so it only sweeps at night).
/// </summary>
internal sealed partial class MaintenanceService(
    IGreylistStore store,
    GreylistOptions options,
    TimeSpan interval,
    TimeProvider time,
    ILogger<MaintenanceService> logger) : BackgroundService
{
    private PeriodicTimer? _timer;

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // Created here, not in ExecuteAsync (which runs on its own later): the interval counts from start.
        _timer = new PeriodicTimer(interval, time);
        return base.StartAsync(cancellationToken);
    }

    public override void Dispose()
    {
        _timer?.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        PeriodicTimer timer = _timer!;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await RunOnceAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // stopping
        }
    }

    public async Task RunOnceAsync(CancellationToken cancellationToken)
    {
        var policy = new MaintenancePolicy(time.GetUtcNow().ToUnixTimeSeconds(), options.MaxAgeSeconds, options.DelaySeconds, options.RetryWindowSeconds);
        Log.Cleaning(logger);
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            MaintenanceReport report = await store.CleanAsync(policy, cancellationToken);
            MaintenanceMetrics.Finished(started, report);
            if (report.Skipped)
            {
                return; // another host sharing the store cleans it; the store said so
            }
            Log.MainFinished(logger, report.TripletsBefore, report.TripletsAfter);
            if (options.AutoWhitelistClients > 0)
            {
                Log.ClientsFinished(logger, report.ClientsBefore, report.ClientsAfter);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (TimeoutException ex)
        {
            // The database was locked elsewhere or too slow: no fault of ours to trace.
            MaintenanceMetrics.Failed(started);
            Log.TimedOut(logger, ex.Message);
        }
        catch (Exception ex)
        {
            MaintenanceMetrics.Failed(started);
            Log.Failed(logger, ex);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(5301, LogLevel.Warning, "cleaning up old entries...", EventName = "MaintenanceStarted")]
        public static partial void Cleaning(ILogger logger);

        [LoggerMessage(5302, LogLevel.Warning, "cleaning main database finished. before: {Before}, after: {After}", EventName = "MaintenanceTriplets")]
        public static partial void MainFinished(ILogger logger, long before, long after);

        [LoggerMessage(5303, LogLevel.Warning, "cleaning clients database finished. before: {Before}, after: {After}", EventName = "MaintenanceClients")]
        public static partial void ClientsFinished(ILogger logger, long before, long after);

        [LoggerMessage(5304, LogLevel.Error, "database cleaning failed; will try again at the next interval", EventName = "MaintenanceFailed")]
        public static partial void Failed(ILogger logger, Exception exception);

        [LoggerMessage(5305, LogLevel.Error, "database cleaning failed ({Reason}); will try again at the next interval", EventName = "MaintenanceTimedOut")]
        public static partial void TimedOut(ILogger logger, string reason);
    }
}
