using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Postgrey.Core.Protocol;
using Postgrey.Testing;

namespace Postgrey.Benchmarks;

/// <summary>One Postfix 3.x request (about 700 bytes, the attribute set smtpd sends), parsed
/// as a connection parses request after request: the target is no allocation per request.</summary>
[MemoryDiagnoser]
public class ParserBenchmarks
{
    private readonly PolicyRequestParser _parser = new(new PolicyLimits());
    private readonly PolicyRequest _request = new();
    private byte[] _data = [];
    private ReadOnlySequence<byte> _split;

    [GlobalSetup]
    public void Setup()
    {
        var extra = new Dictionary<string, string>
        {
            ["client_port"] = "53422", ["ccert_subject"] = "", ["ccert_issuer"] = "", ["ccert_fingerprint"] = "",
            ["encryption_protocol"] = "TLSv1.3", ["encryption_cipher"] = "TLS_AES_256_GCM_SHA384", ["encryption_keysize"] = "256",
            ["etrn_domain"] = "", ["stress"] = "", ["sasl_method"] = "", ["sasl_username"] = "", ["sasl_sender"] = "",
            ["size"] = "12345", ["server_address"] = "192.0.2.25", ["server_port"] = "25", ["policy_context"] = "",
            ["compatibility_level"] = "3.6", ["mail_version"] = "3.7.11",
        };
        _data = Encoding.UTF8.GetBytes(Requests.Policy(instance: "1a2b.6563f0c1.8e2d4.0", queueId: "", extra: extra));
        _split = Split(_data, _data.Length / 2);
        Parse(new ReadOnlySequence<byte>(_data)); // warm the string reuse
    }

    [Benchmark(Baseline = true)]
    public PolicyReadStatus OneSegment() => Parse(new ReadOnlySequence<byte>(_data));

    [Benchmark]
    public PolicyReadStatus TwoSegments() => Parse(_split);

    private PolicyReadStatus Parse(ReadOnlySequence<byte> buffer)
    {
        _request.Reset();
        return _parser.TryRead(ref buffer, _request);
    }

    private static ReadOnlySequence<byte> Split(byte[] data, int at)
    {
        var first = new Segment(data.AsMemory(0, at), 0);
        var second = first.Append(data.AsMemory(at));
        return new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
