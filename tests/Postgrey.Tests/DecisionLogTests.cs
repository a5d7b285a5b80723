using System.Globalization;
using System.Text.Json;
using Postgrey.Logging;
using Postgrey.Testing;
using Serilog;
using Serilog.Events;

namespace Postgrey.Tests;

/// <summary>The decision line: structured properties from the engine's message template,
/// rendered byte for byte as postgrey's <c>mylog_action</c>, or as JSON with --log-format=json.</summary>
public sealed class DecisionLogTests : IDisposable
{
    private const long T = 1_700_000_000;
    private const string Template =
        "{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, client_address={ClientAddress}, sender={Sender}, recipient={Recipient}";

    private readonly TempDirectory _dir = new();

    public DecisionLogTests()
    {
        _dir.Write("clients", "# none\n");
        _dir.Write("recipients", "postmaster@\n");
    }

    private string[] Args(params string[] extra) =>
    [
        "--inet=127.0.0.1:0",
        $"--dbdir={_dir.File("db")}",
        $"--whitelist-clients={_dir.File("clients")}",
        $"--whitelist-recipients={_dir.File("recipients")}",
        "--delay=60",
        "--allow-test-time",
        .. extra,
    ];

    // A greylisted first attempt with a queue id, its retry (the delay form), a bounce (no
    // sender) and a sender with 8-bit and control bytes.
    private static readonly string[] Requests =
    [
        Testing.Requests.Policy(queueId: "4BF2A1C3D", testTime: T, instance: "a"),
        Testing.Requests.Policy(queueId: "4BF2A1C3E", testTime: T + 75, instance: "b"),
        Testing.Requests.Policy(sender: "", clientName: "unknown", recipient: "c@example.org", testTime: T, instance: "c"),
        Testing.Requests.Policy(sender: "jörg\u0001x@example.net", recipient: "d@example.org", testTime: T, instance: "d"),
    ];

    private static async Task<List<string>> AskAllAsync(PolicyServerProcess server, Func<string, bool> isDecision, bool json = false)
    {
        System.Net.IPEndPoint endPoint = json
            ? System.Net.IPEndPoint.Parse(JsonDocument.Parse(await server.WaitForLineAsync(l => l.Contains("\"Name\":\"Listening\"", StringComparison.Ordinal)))
                .RootElement.GetProperty("EndPoint").GetString()!)
            : await server.WaitForTcpAsync();
        await using (var client = await PolicyClient.ConnectAsync(endPoint, TestContext.Current.CancellationToken))
        {
            foreach (string request in Requests)
            {
                Assert.NotNull(await client.AskAsync(request, TestContext.Current.CancellationToken));
            }
        }
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (server.Lines.Count(isDecision) < Requests.Length && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
        return [.. server.Lines.Where(isDecision)];
    }

    [Fact]
    public async Task Text_DecisionLines_ArePostgreysByteForByte()
    {
        await using var server = PostgreyProcess.Start(Args());
        List<string> lines = await AskAllAsync(server, l => l.Contains("action=", StringComparison.Ordinal));

        Assert.Equal(
        [
            "4BF2A1C3D: action=greylist, reason=new, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org",
            "4BF2A1C3E: action=pass, reason=triplet found, delay=75, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org",
            "action=greylist, reason=new, client_name=unknown, client_address=192.0.2.7, recipient=c@example.org",
            "action=greylist, reason=new, client_name=mx.example.net, client_address=192.0.2.7, sender=j%C3%B6rg%01x@example.net, recipient=d@example.org",
        ], lines);
    }

    [Fact]
    public async Task Json_DecisionEvents_CarryEachFieldAsAProperty()
    {
        await using var server = PostgreyProcess.Start(Args("--log-format=json"));
        List<string> lines = await AskAllAsync(server, l => l.Contains("\"EventId\":{\"Id\":3001", StringComparison.Ordinal), json: true);

        Assert.Equal(4, lines.Count);
        var events = lines.Select(l => JsonDocument.Parse(l).RootElement).ToList(); // every line parses
        Assert.All(events, e => Assert.Equal(Template, e.GetProperty("@mt").GetString()));
        Assert.All(events, e => Assert.Equal("postgrey", e.GetProperty("SourceContext").GetString()));
        Assert.Equal("4BF2A1C3D", events[0].GetProperty("QueueId").GetString());
        Assert.Equal("greylist", events[0].GetProperty("Action").GetString());
        Assert.Equal("new", events[0].GetProperty("Reason").GetString());
        Assert.Equal(JsonValueKind.Null, events[0].GetProperty("Delay").ValueKind);
        Assert.Equal("mx.example.net", events[0].GetProperty("ClientName").GetString());
        Assert.Equal("192.0.2.7", events[0].GetProperty("ClientAddress").GetString());
        Assert.Equal("a@example.net", events[0].GetProperty("Sender").GetString());
        Assert.Equal("b@example.org", events[0].GetProperty("Recipient").GetString());
        Assert.Equal("pass", events[1].GetProperty("Action").GetString());
        Assert.Equal("triplet found", events[1].GetProperty("Reason").GetString());
        Assert.Equal(75, events[1].GetProperty("Delay").GetInt64());
        Assert.Equal(JsonValueKind.Null, events[2].GetProperty("Sender").ValueKind);
        Assert.Equal(JsonValueKind.Null, events[2].GetProperty("QueueId").ValueKind);
        Assert.Equal("jörg\u0001x@example.net", events[3].GetProperty("Sender").GetString());
        Assert.DoesNotContain(lines, l => l.Contains('\u0001', StringComparison.Ordinal)); // JSON escapes it
    }

    [Theory]
    [InlineData(true, "Q1", "pass", "triplet found", 312L, "mx", "192.0.2.7", "a@x", "b@y",
        "Q1: action=pass, reason=triplet found, delay=312, client_name=mx, client_address=192.0.2.7, sender=a@x, recipient=b@y")]
    [InlineData(true, null, "greylist", "early-retry (200s missing)", null, null, "192.0.2.7", null, "b@y",
        "action=greylist, reason=early-retry (200s missing), client_address=192.0.2.7, recipient=b@y")]
    [InlineData(true, null, "pass", "client AWL", null, "mx", "192.0.2.7", "jörg\t@x", null,
        "action=pass, reason=client AWL, client_name=mx, client_address=192.0.2.7, sender=j%C3%B6rg%09@x")]
    [InlineData(false, null, "pass", "client AWL", null, "mx", "192.0.2.7", "jörg\t@x\u007f", "b@y",
        "action=pass, reason=client AWL, client_name=mx, client_address=192.0.2.7, sender=jörg%09@x%7F, recipient=b@y")]
    public void Format_DecisionTemplate_LeavesOutNullFieldsWithTheirLabels(
        bool console, string? queueId, string action, string reason, long? delay, string? clientName, string? clientAddress, string? sender, string? recipient, string expected)
    {
        var events = new List<LogEvent>();
        using (var logger = new LoggerConfiguration().WriteTo.Sink(new Collect(events)).CreateLogger())
        {
            logger.Information(Template, queueId, action, reason, delay, clientName, clientAddress, sender, recipient);
        }
        var output = new StringWriter(CultureInfo.InvariantCulture);
        new NetServerLogFormatter(console ? LogEscaping.NetServer : LogEscaping.Controls).Format(Assert.Single(events), output);
        Assert.Equal(expected + "\n", output.ToString());
    }

    [Fact]
    public void Format_NullOutsideALabel_IsWrittenAsNull()
    {
        var events = new List<LogEvent>();
        using (var logger = new LoggerConfiguration().WriteTo.Sink(new Collect(events)).CreateLogger())
        {
            logger.Warning("unrecognized request type: '{Request}'", (string?)null);
        }
        var output = new StringWriter(CultureInfo.InvariantCulture);
        new NetServerLogFormatter(LogEscaping.NetServer).Format(Assert.Single(events), output);
        Assert.Equal("unrecognized request type: 'null'\n", output.ToString());
    }

    private sealed class Collect(List<LogEvent> events) : Serilog.Core.ILogEventSink
    {
        public void Emit(LogEvent logEvent) => events.Add(logEvent);
    }

    public void Dispose() => _dir.Dispose();
}
