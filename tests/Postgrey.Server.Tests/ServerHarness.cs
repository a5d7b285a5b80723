using System.Net;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Core.Whitelists;
using Postgrey.Storage.Sqlite;
using Postgrey.Testing;

namespace Postgrey.Server.Tests;

/// <summary>A real PolicyServer over the real engine and SQLite store, on 127.0.0.1:0 and a Unix
/// socket in a temp directory.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    private readonly LoggerFactory _loggerFactory;

    private ServerHarness(ServerOptions options, GreylistOptions greylist, TempDirectory dir)
    {
        Dir = dir;
        _loggerFactory = new LoggerFactory([Logs, DecisionThreads]);
        // As the service wires them: with epoll, answers continue on the writer thread.
        Store = SqliteGreylistStore.Open(
            new SqliteStoreOptions { Directory = dir.File("db"), ContinueOnWriterThread = PolicyServer.UsesEpoll(options) },
            _loggerFactory.CreateLogger("store"));
        var engine = new GreylistEngine(Store, new WhitelistProvider(WhitelistSet.Empty), greylist, TimeProvider.System, _loggerFactory);
        var handler = new PolicyConnectionHandler(engine, options.Limits, options.Exim, _loggerFactory.CreateLogger<PolicyConnectionHandler>());
        Server = new PolicyServer(options, handler, _loggerFactory.CreateLogger<PolicyServer>());
        Options = options;
    }

    public TempDirectory Dir { get; }
    public CapturingLoggerProvider Logs { get; } = new();
    public ThreadRecorder DecisionThreads { get; } = new(GreylistEngine.DecisionLogCategory);
    public SqliteGreylistStore Store { get; }
    public PolicyServer Server { get; }
    public ServerOptions Options { get; }
    public EndPoint Tcp => Server.BoundEndPoints.First(e => e is IPEndPoint);
    public EndPoint Unix => Server.BoundEndPoints.First(e => e is not IPEndPoint);
    public string SocketPath => Options.Unix[0];

    public static async Task<ServerHarness> StartAsync(Func<ServerOptions, ServerOptions>? configure = null, GreylistOptions? greylist = null)
    {
        var dir = new TempDirectory();
        var options = new ServerOptions
        {
            Inet = [new InetEndpoint(new IPEndPoint(IPAddress.Loopback, 0))],
            Unix = [dir.File("policy.sock")],
        };
        options = configure?.Invoke(options) ?? options;
        var harness = new ServerHarness(options, greylist ?? new GreylistOptions(), dir);
        try
        {
            await harness.Server.StartAsync(CancellationToken.None);
        }
        catch
        {
            await harness.DisposeAsync();
            throw;
        }
        return harness;
    }

    public Task<PolicyClient> ConnectAsync(bool unix = false) => PolicyClient.ConnectAsync(unix ? Unix : Tcp);

    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await Server.StopAsync(timeout.Token);
        Server.Dispose();
        Store.Dispose();
        _loggerFactory.Dispose();
        Dir.Dispose();
    }
}

/// <summary>The name of every thread that wrote a line of one logger category.</summary>
internal sealed class ThreadRecorder(string category) : ILoggerProvider
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _names = new();

    public IReadOnlyList<string> Names => _names.ToArray();

    public ILogger CreateLogger(string categoryName) => new Recorder(categoryName == category ? _names : null);

    public void Dispose()
    {
    }

    private sealed class Recorder(System.Collections.Concurrent.ConcurrentQueue<string>? names) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => names is not null;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            names?.Enqueue(Thread.CurrentThread.Name ?? "(unnamed)");
    }
}
