using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Storage;
using Postgrey.Hosting;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Tests;

public sealed class MaintenanceServiceTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    [Fact]
    public async Task Timer_CleansTheDatabaseEveryIntervalAndLogsPostgreysLines()
    {
        var time = new FakeTimeProvider(DateTimeOffset.FromUnixTimeSeconds(10_000_000));
        using var store = SqliteGreylistStore.Open(new SqliteStoreOptions { Directory = _dir.Path }, NullLogger.Instance);
        long now = time.GetUtcNow().ToUnixTimeSeconds();
        await store.ExecuteAsync(0, (tx, _) =>
        {
            tx.SaveTriplet("old", new TripletRecord(now - (40 * 86400), now - (36 * 86400)));
            tx.SaveTriplet("fresh", new TripletRecord(now - 1000, now - 10));
            tx.SaveClient("1.2.3.4", new ClientRecord(6, now - (36 * 86400)));
            return 0;
        }, CancellationToken.None);
        var logs = new CapturingLoggerProvider();
        using var loggerFactory = new LoggerFactory([logs]);
        using var service = new MaintenanceService(store, new GreylistOptions(), TimeSpan.FromHours(1), time, loggerFactory.CreateLogger<MaintenanceService>());

        await service.StartAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(59));
        Assert.DoesNotContain(logs.Messages(), m => m.StartsWith("cleaning main", StringComparison.Ordinal));
        time.Advance(TimeSpan.FromMinutes(1));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!logs.Messages().Any(m => m.StartsWith("cleaning clients", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }
        await service.StopAsync(CancellationToken.None);

        Assert.Contains("cleaning main database finished. before: 2, after: 1", logs.Messages());
        Assert.Contains("cleaning clients database finished. before: 1, after: 0", logs.Messages());
    }

    public void Dispose() => _dir.Dispose();
}
