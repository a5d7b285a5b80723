using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using ARSoft.Tools.Net;
using ARSoft.Tools.Net.Dns;

namespace Postgrey.Testing;

/// <summary>
/// A real authoritative DNS server (ARSoft.Tools.Net's <see cref="DnsServer"/>) on 127.0.0.1
/// and a free port, UDP and TCP, answering from the records given: NXDOMAIN with an SOA for
/// names it does not know, CNAMEs followed within the zone. Counts the questions it got.
/// </summary>
public sealed class TestDnsServer : IDisposable
{
    private readonly DnsServer _server;
    private readonly ConcurrentDictionary<string, List<DnsRecordBase>> _records = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, byte> _stalled = new(StringComparer.OrdinalIgnoreCase);
    private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _queries;

    public TestDnsServer()
    {
        Port = PolicyServerProcess.FreePort();
        var endpoint = new IPEndPoint(IPAddress.Loopback, Port);
        _server = new DnsServer(new UdpServerTransport(endpoint), new TcpServerTransport(endpoint));
        _server.QueryReceived += OnQueryAsync;
        _server.Start();
    }

    public int Port { get; }

    /// <summary>For --dns-server.</summary>
    public string Endpoint => "127.0.0.1:" + Port;

    /// <summary>How many questions were answered.</summary>
    public int Queries => Volatile.Read(ref _queries);

    /// <summary>The TTL of records added from now on.</summary>
    public int Ttl { get; set; } = 300;

    public TestDnsServer Txt(string name, params string[] texts)
    {
        foreach (string text in texts)
        {
            Add(new TxtRecord(DomainName.Parse(name), Ttl, Chunks(text)));
        }
        return this;
    }

    public TestDnsServer A(string name, params string[] addresses)
    {
        foreach (string address in addresses)
        {
            IPAddress ip = IPAddress.Parse(address);
            Add(ip.AddressFamily == AddressFamily.InterNetworkV6
                ? new AaaaRecord(DomainName.Parse(name), Ttl, ip)
                : new ARecord(DomainName.Parse(name), Ttl, ip));
        }
        return this;
    }

    public TestDnsServer Mx(string name, params string[] exchanges)
    {
        ushort preference = 10;
        foreach (string exchange in exchanges)
        {
            Add(new MxRecord(DomainName.Parse(name), Ttl, preference, DomainName.Parse(exchange)));
            preference += 10;
        }
        return this;
    }

    public TestDnsServer Cname(string name, string target)
    {
        Add(new CNameRecord(DomainName.Parse(name), Ttl, DomainName.Parse(target)));
        return this;
    }

    /// <summary>Questions about <paramref name="name"/> are answered only after <see cref="Release"/>.</summary>
    public TestDnsServer Stall(string name)
    {
        _stalled[name] = 0;
        return this;
    }

    public void Release() => _release.TrySetResult();

    private void Add(DnsRecordBase record) =>
        _records.AddOrUpdate(record.Name.ToString(false), _ => [record], (_, list) => { lock (list) { list.Add(record); } return list; });

    // A TXT string holds at most 255 bytes: a long record is several strings.
    private static string[] Chunks(string text)
    {
        var chunks = new List<string>();
        for (int i = 0; i < text.Length; i += 255)
        {
            chunks.Add(text.Substring(i, Math.Min(255, text.Length - i)));
        }
        return chunks.Count == 0 ? [""] : [.. chunks];
    }

    private async Task OnQueryAsync(object sender, QueryReceivedEventArgs e)
    {
        if (e.Query is not DnsMessage query || query.Questions.Count != 1)
        {
            return;
        }
        Interlocked.Increment(ref _queries);
        if (_stalled.ContainsKey(query.Questions[0].Name.ToString(false)))
        {
            await _release.Task;
        }
        DnsMessage response = query.CreateResponseInstance();
        response.IsAuthoritiveAnswer = true;
        DnsQuestion question = query.Questions[0];
        DomainName name = question.Name;
        for (int hops = 0; hops < 8; hops++)
        {
            if (!_records.TryGetValue(name.ToString(false), out List<DnsRecordBase>? records))
            {
                break;
            }
            List<DnsRecordBase> matching;
            lock (records)
            {
                matching = records.Where(r => r.RecordType == question.RecordType).ToList();
                if (matching.Count == 0 && records.OfType<CNameRecord>().FirstOrDefault() is { } cname && question.RecordType != RecordType.CName)
                {
                    response.AnswerRecords.Add(cname);
                    name = cname.CanonicalName;
                    continue;
                }
            }
            response.AnswerRecords.AddRange(matching);
            break;
        }
        if (response.AnswerRecords.Count == 0)
        {
            bool known = _records.ContainsKey(name.ToString(false));
            response.ReturnCode = known ? ReturnCode.NoError : ReturnCode.NxDomain;
            response.AuthorityRecords.Add(new SoaRecord(DomainName.Parse("test"), 60, DomainName.Parse("ns.test"), DomainName.Parse("hostmaster.test"), 1, 3600, 600, 86400, 60));
        }
        e.Response = response;
    }

    public void Dispose()
    {
        Release();
        try
        {
            _server.Stop();
        }
        catch (AggregateException ex) when (ex.InnerExceptions.All(e => e is OperationCanceledException))
        {
            // ARSoft's Stop cancels its listener tasks and, at times, reports them as cancelled.
        }
    }
}

/// <summary>A UDP "DNS server" on 127.0.0.1 that never answers, or answers every question with
/// bytes that are no DNS message (garbage: true).</summary>
public sealed class BrokenDnsServer : IDisposable
{
    private readonly Socket _socket;
    private readonly CancellationTokenSource _stop = new();

    public BrokenDnsServer(bool garbage)
    {
        Port = PolicyServerProcess.FreePort();
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _socket.Bind(new IPEndPoint(IPAddress.Loopback, Port));
        if (garbage)
        {
            _ = Task.Run(AnswerGarbageAsync);
        }
    }

    public int Port { get; }

    public string Endpoint => "127.0.0.1:" + Port;

    private async Task AnswerGarbageAsync()
    {
        byte[] buffer = new byte[4096];
        var random = new Random(17);
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                SocketReceiveFromResult got = await _socket.ReceiveFromAsync(buffer, new IPEndPoint(IPAddress.Any, 0), _stop.Token);
                // The question's id, so that the client reads on, then noise.
                byte[] answer = new byte[64 + random.Next(400)];
                random.NextBytes(answer);
                answer[0] = buffer[0];
                answer[1] = buffer[1];
                answer[2] |= 0x80; // QR: a response
                await _socket.SendToAsync(answer, got.RemoteEndPoint, _stop.Token);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _socket.Dispose();
        _stop.Dispose();
    }
}
