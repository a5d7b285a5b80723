using System.Text;

namespace Postgrey.Differential.Tests;

/// <summary>One request of a scenario: the attributes Postfix would send, at a given time.</summary>
internal sealed record Step
{
    public required long Time { get; init; }
    public string? Client { get; init; }
    public string? Name { get; init; }
    public string? Sender { get; init; }
    public string? Recipient { get; init; }
    public string? Instance { get; init; }
    public string? QueueId { get; init; }
    public string Request { get; init; } = "smtpd_access_policy";
    public bool EtrnDomain { get; init; } = true;
    public bool Crlf { get; init; }
    public string? GarbageLine { get; init; }

    /// <summary>Attributes left out of the request (to test "attribute missing").</summary>
    public IReadOnlyList<string> Omit { get; init; } = [];

    public string ToWire()
    {
        var lines = new List<(string Name, string? Value)>
        {
            ("request", Request),
            ("protocol_state", "RCPT"),
            ("protocol_name", "ESMTP"),
            ("client_address", Client),
            ("client_name", Name),
            ("reverse_client_name", Name),
            ("helo_name", Name),
            ("sender", Sender),
            ("recipient", Recipient),
            ("recipient_count", "0"),
            ("queue_id", QueueId ?? ""),
            ("instance", Instance),
            ("size", "1234"),
            ("policy_test_time", Time.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        };
        if (EtrnDomain)
        {
            lines.Add(("etrn_domain", ""));
        }
        var sb = new StringBuilder();
        string eol = Crlf ? "\r\n" : "\n";
        if (GarbageLine is not null)
        {
            sb.Append(GarbageLine).Append(eol);
        }
        foreach (var (name, value) in lines)
        {
            if (value is not null && !Omit.Contains(name))
            {
                sb.Append(name).Append('=').Append(value).Append(eol);
            }
        }
        return sb.Append(eol).ToString();
    }
}

/// <summary>
/// A sequence of requests run against both servers. Each scenario gets its own number, from
/// which its client addresses, senders, recipients and times derive, so scenarios that share
/// a server pair never touch each other's triplets or auto-whitelist entries.
/// </summary>
internal sealed record Scenario(string Name, string FlagSet, Func<ScenarioContext, Step[]> Build)
{
    /// <summary>A new connection for each request (--exim).</summary>
    public bool ConnectionPerRequest { get; init; }

    /// <summary>For a deliberate difference: asserts both answer lists explicitly instead of equality.</summary>
    public Action<IReadOnlyList<string>, IReadOnlyList<string>>? Deliberate { get; init; }
}

/// <summary>Defaults derived from the scenario's number.</summary>
internal sealed class ScenarioContext(int number)
{
    public const long Epoch = 1_800_000_000;

    public int Number { get; } = number;

    public long T0 => Epoch + (Number * 10_000_000L);

    public string Client => $"10.{Number}.0.1";

    public string Sender => $"sender{Number}@sender.example";

    public string Recipient => $"rcpt{Number}@rcpt.example";

    public Step R(long seconds, string? client = null, string? sender = null, string? recipient = null, string? name = null, string? instance = null) => new()
    {
        Time = T0 + seconds,
        Client = client ?? Client,
        Name = name ?? "mx.sender.example",
        Sender = sender ?? Sender,
        Recipient = recipient ?? Recipient,
        Instance = instance ?? $"i{Number}-{seconds}",
    };
}
