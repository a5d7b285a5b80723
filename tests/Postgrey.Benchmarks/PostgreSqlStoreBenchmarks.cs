using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.PostgreSql;
using Postgrey.Testing;

namespace Postgrey.Benchmarks;

/// <summary>
/// A whole decision, engine and the PostgreSQL store, on a private cluster with fsync and
/// synchronous_commit on (over its Unix socket: the round trip is the local one). One request
/// at a time pays two round trips and a commit; many at once share them (batches).
/// Needs Debian's postgresql package; run as root it starts the cluster as postgres.
/// </summary>
[MemoryDiagnoser]
public class PostgreSqlStoreBenchmarks
{
    private PostgresCluster _cluster = null!;
    private PostgreSqlGreylistStore _store = null!;
    private GreylistEngine _engine = null!;
    private PolicyRequest[] _requests = [];
    private int _next;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _cluster = new PostgresCluster { Durable = true };
        string database = await _cluster.CreateDatabaseAsync();
        var builder = PostgreSqlConnectionString.Parse(_cluster.SocketUri(database), out string error) ?? throw new InvalidOperationException(error);
        _store = PostgreSqlGreylistStore.Open(
            new PostgreSqlStoreOptions { ConnectionString = builder.ConnectionString, Description = database, Timeout = TimeSpan.FromSeconds(30) },
            NullLogger.Instance);
        _engine = new GreylistEngine(_store, new WhitelistProvider(WhitelistSet.Empty), new GreylistOptions(), TimeProvider.System, NullLoggerFactory.Instance);
        _requests = Enumerable.Range(0, 10_000).Select(i =>
        {
            var parser = new PolicyRequestParser(new PolicyLimits());
            var request = new PolicyRequest();
            var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Requests.Policy(
                clientAddress: $"198.51.{i % 200}.{i % 250}", sender: $"user{i}@sender.example", recipient: $"rcpt{i % 997}@dest.example")));
            parser.TryRead(ref buffer, request);
            return request;
        }).ToArray();
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        _store.Dispose();
        await _cluster.DisposeAsync();
    }

    [Benchmark]
    public async Task<string> OneAtATime() => await _engine.DecideAsync(_requests[_next++ % _requests.Length], CancellationToken.None);

    [Benchmark(OperationsPerInvoke = 64)]
    public Task SixtyFourAtOnce() => ManyAtOnce(64);

    [Benchmark(OperationsPerInvoke = 512)]
    public Task FiveHundredTwelveAtOnce() => ManyAtOnce(512);

    private async Task ManyAtOnce(int n)
    {
        var pending = new Task<string>[n];
        for (int i = 0; i < pending.Length; i++)
        {
            pending[i] = _engine.DecideAsync(_requests[_next++ % _requests.Length], CancellationToken.None).AsTask();
        }
        await Task.WhenAll(pending);
    }
}
