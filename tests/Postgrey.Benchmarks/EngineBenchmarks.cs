using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Protocol;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Benchmarks;

/// <summary>A whole decision, engine and real SQLite store (WAL, synchronous=NORMAL) in a temp
/// directory: one request at a time (each its own commit), and 64 at once (group commit).</summary>
[MemoryDiagnoser]
public class EngineBenchmarks
{
    private TempDirectory _dir = null!;
    private SqliteGreylistStore _store = null!;
    private GreylistEngine _engine = null!;
    private PolicyRequest[] _requests = [];
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _dir = new TempDirectory();
        _store = SqliteGreylistStore.Open(new SqliteStoreOptions { Directory = _dir.Path }, NullLogger.Instance);
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
    public void Cleanup()
    {
        _store.Dispose();
        _dir.Dispose();
    }

    [Benchmark]
    public async Task<string> OneAtATime() => await _engine.DecideAsync(_requests[_next++ % _requests.Length], CancellationToken.None);

    [Benchmark(OperationsPerInvoke = 64)]
    public async Task SixtyFourAtOnce()
    {
        var pending = new Task<string>[64];
        for (int i = 0; i < pending.Length; i++)
        {
            pending[i] = _engine.DecideAsync(_requests[_next++ % _requests.Length], CancellationToken.None).AsTask();
        }
        await Task.WhenAll(pending);
    }
}
