using System.Buffers;
using System.Text;

namespace Postgrey.Core.Protocol;

/// <summary>
/// Incremental parser of the Postfix policy protocol (SMTPD_POLICY_README): <c>name=value</c>
/// lines, an empty line ends the request. One parser per connection; complete lines are
/// consumed as they arrive, an incomplete line is left in the buffer. Parsing follows
/// postgrey's <c>mux_input</c>: a trailing CR is dropped, the name runs to the first '='
/// (leading '=' are skipped, as its unanchored regex does), name and value are cut to 512 bytes,
/// a non-empty line without '=' is garbage.
/// </summary>
public sealed class PolicyRequestParser
{
    private const int GarbageLogBytes = 100; // postgrey: substr($in, 0, 100) on bytes

    private readonly PolicyLimits _limits;
    private readonly byte[] _scratch;
    private int _attributes;
    private int _requestBytes;

    // Values repeated across requests of one connection keep their string (no allocation).
    private readonly ReusedString _request = new();
    private readonly ReusedString _clientAddress = new();
    private readonly ReusedString _clientName = new();
    private readonly ReusedString _sender = new();
    private readonly ReusedString _recipient = new();
    private readonly ReusedString _instance = new();
    private readonly ReusedString _queueId = new();
    private readonly ReusedString _etrnDomain = new();
    private readonly ReusedString _testTime = new();

    public PolicyRequestParser(PolicyLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        _limits = limits;
        _scratch = new byte[limits.MaxLineBytes + 1];
    }

    /// <summary>The garbage line found by the last <see cref="PolicyReadStatus.GarbageLine"/>, cut to
    /// 100 bytes as postgrey logs it. Escaping is the log sink's job.</summary>
    public string LastGarbage { get; private set; } = "";

    /// <summary>
    /// Consumes complete lines from <paramref name="buffer"/> into <paramref name="request"/>.
    /// On return <paramref name="buffer"/> starts after the last consumed line.
    /// </summary>
    public PolicyReadStatus TryRead(ref ReadOnlySequence<byte> buffer, PolicyRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (buffer.IsSingleSegment)
        {
            // The usual case (a request arrives in one read): plain span searches, no reader.
            PolicyReadStatus result = TryRead(buffer.FirstSpan, request, out int consumed);
            buffer = buffer.Slice(consumed);
            return result;
        }
        var reader = new SequenceReader<byte>(buffer);
        while (true)
        {
            if (!reader.TryReadTo(out ReadOnlySequence<byte> lineSequence, (byte)'\n'))
            {
                buffer = buffer.Slice(reader.Position);
                // No newline within the limit: the line can only end up too long.
                return buffer.Length > _limits.MaxLineBytes + 1 ? PolicyReadStatus.LineTooLong : PolicyReadStatus.NeedMoreData;
            }

            PolicyReadStatus? status;
            if (lineSequence.Length > _limits.MaxLineBytes + 1)
            {
                status = PolicyReadStatus.LineTooLong;
            }
            else if (lineSequence.IsSingleSegment)
            {
                status = OnLine(lineSequence.FirstSpan, request);
            }
            else
            {
                lineSequence.CopyTo(_scratch);
                status = OnLine(_scratch.AsSpan(0, (int)lineSequence.Length), request);
            }
            if (status is { } done)
            {
                buffer = buffer.Slice(reader.Position);
                return done;
            }
        }
    }

    /// <summary>
    /// <see cref="TryRead(ref ReadOnlySequence{byte}, PolicyRequest)"/> over one span;
    /// <paramref name="consumed"/> is the length of the lines it consumed.
    /// </summary>
    public PolicyReadStatus TryRead(ReadOnlySpan<byte> buffer, PolicyRequest request, out int consumed)
    {
        ArgumentNullException.ThrowIfNull(request);
        int position = 0;
        while (true)
        {
            int newline = buffer[position..].IndexOf((byte)'\n');
            if (newline < 0)
            {
                consumed = position;
                return buffer.Length - position > _limits.MaxLineBytes + 1 ? PolicyReadStatus.LineTooLong : PolicyReadStatus.NeedMoreData;
            }
            ReadOnlySpan<byte> line = buffer.Slice(position, newline);
            position += newline + 1;
            PolicyReadStatus? status = line.Length > _limits.MaxLineBytes + 1 ? PolicyReadStatus.LineTooLong : OnLine(line, request);
            if (status is { } done)
            {
                consumed = position;
                return done;
            }
        }
    }

    /// <summary>One line without its newline; null when the request goes on.</summary>
    private PolicyReadStatus? OnLine(ReadOnlySpan<byte> line, PolicyRequest request)
    {
        int length = line.Length;
        if (line.Length > 0 && line[^1] == (byte)'\r')
        {
            line = line[..^1];
        }
        if (line.Length > _limits.MaxLineBytes)
        {
            return PolicyReadStatus.LineTooLong;
        }

        if (line.IsEmpty)
        {
            _attributes = 0;
            _requestBytes = 0;
            request.ReceivedTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
            return PolicyReadStatus.Request;
        }

        _requestBytes += length + 1;
        if (_requestBytes > _limits.MaxRequestBytes)
        {
            return PolicyReadStatus.RequestTooLarge;
        }
        if (++_attributes > _limits.MaxAttributesPerRequest)
        {
            return PolicyReadStatus.TooManyAttributes;
        }

        if (!TryApplyAttribute(line, request))
        {
            LastGarbage = DescribeGarbage(line);
            return PolicyReadStatus.GarbageLine;
        }
        return null;
    }

    private bool TryApplyAttribute(ReadOnlySpan<byte> line, PolicyRequest request)
    {
        // postgrey matches /([^=]+)=(.*)/ unanchored: leading '=' are skipped.
        int start = line.IndexOfAnyExcept((byte)'=');
        if (start < 0)
        {
            return false;
        }
        line = line[start..];
        int equals = line.IndexOf((byte)'=');
        if (equals < 0)
        {
            return false;
        }

        ReadOnlySpan<byte> name = Cut(line[..equals]);
        ReadOnlySpan<byte> value = Cut(line[(equals + 1)..]);

        switch (name.Length)
        {
            case 6 when name.SequenceEqual("sender"u8):
                request.Sender = _sender.Get(value);
                break;
            case 7 when name.SequenceEqual("request"u8):
                request.Request = _request.Get(value);
                break;
            case 8 when name.SequenceEqual("instance"u8):
                request.Instance = _instance.Get(value);
                break;
            case 8 when name.SequenceEqual("queue_id"u8):
                request.QueueId = _queueId.Get(value);
                break;
            case 9 when name.SequenceEqual("recipient"u8):
                request.Recipient = _recipient.Get(value);
                break;
            case 11 when name.SequenceEqual("client_name"u8):
                request.ClientName = _clientName.Get(value);
                break;
            case 11 when name.SequenceEqual("etrn_domain"u8):
                request.EtrnDomain = _etrnDomain.Get(value);
                break;
            case 14 when name.SequenceEqual("client_address"u8):
                request.ClientAddress = _clientAddress.Get(value);
                break;
            case 16 when name.SequenceEqual("policy_test_time"u8):
                request.PolicyTestTime = _testTime.Get(value);
                break;
            default:
                break; // attributes postgrey does not read are skipped without allocating
        }
        return true;
    }

    private static ReadOnlySpan<byte> Cut(ReadOnlySpan<byte> span) =>
        span.Length > PolicyLimits.PostgreyValueLimit ? span[..PolicyLimits.PostgreyValueLimit] : span;

    private static string DescribeGarbage(ReadOnlySpan<byte> line) =>
        Encoding.UTF8.GetString(line.Length > GarbageLogBytes ? line[..GarbageLogBytes] : line);

    /// <summary>Keeps the last decoded value of one attribute and its bytes.</summary>
    private sealed class ReusedString
    {
        private byte[] _bytes = new byte[32];
        private int _length;
        private string? _value;

        public string Get(ReadOnlySpan<byte> span)
        {
            if (_value is not null && span.SequenceEqual(_bytes.AsSpan(0, _length)))
            {
                return _value;
            }
            if (span.Length > _bytes.Length)
            {
                _bytes = new byte[Math.Max(span.Length, _bytes.Length * 2)];
            }
            span.CopyTo(_bytes);
            _length = span.Length;
            // Postfix passes SMTPUTF8 addresses through as UTF-8.
            _value = span.IsEmpty ? "" : Encoding.UTF8.GetString(span);
            return _value;
        }
    }
}
