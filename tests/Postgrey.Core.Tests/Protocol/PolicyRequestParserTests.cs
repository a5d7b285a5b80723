using System.Buffers;
using System.Text;
using Postgrey.Core.Protocol;
using Postgrey.Testing;

namespace Postgrey.Core.Tests.Protocol;

public class PolicyRequestParserTests
{
    private static readonly PolicyLimits Limits = new();

    private static (PolicyReadStatus Status, long Consumed) Parse(ReadOnlySequence<byte> input, PolicyRequest request, PolicyRequestParser? parser = null)
    {
        parser ??= new PolicyRequestParser(Limits);
        var buffer = input;
        PolicyReadStatus status;
        do
        {
            status = parser.TryRead(ref buffer, request);
        }
        while (status == PolicyReadStatus.GarbageLine);
        return (status, input.Length - buffer.Length);
    }

    [Fact]
    public void TryRead_WholeRequest_ReadsTheAttributesPostgreyUses()
    {
        var request = new PolicyRequest();
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy(instance: "1a.2b", queueId: "ABC123", testTime: 1000));

        var (status, consumed) = Parse(new ReadOnlySequence<byte>(data), request);

        Assert.Equal(PolicyReadStatus.Request, status);
        Assert.Equal(data.Length, consumed);
        Assert.Equal("smtpd_access_policy", request.Request);
        Assert.Equal("192.0.2.7", request.ClientAddress);
        Assert.Equal("mx.example.net", request.ClientName);
        Assert.Equal("a@example.net", request.Sender);
        Assert.Equal("b@example.org", request.Recipient);
        Assert.Equal("1a.2b", request.Instance);
        Assert.Equal("ABC123", request.QueueId);
        Assert.Equal("", request.EtrnDomain);
        Assert.Equal("1000", request.PolicyTestTime);
    }

    [Fact]
    public void TryRead_SplitAtEveryByte_GivesTheSameRequest()
    {
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy(sender: "", instance: "x"));
        for (int cut = 0; cut <= data.Length; cut++)
        {
            var request = new PolicyRequest();
            var (status, consumed) = Parse(Segment.Split(data, cut), request);
            Assert.Equal(PolicyReadStatus.Request, status);
            Assert.Equal(data.Length, consumed);
            Assert.Equal("", request.Sender);
            Assert.Equal("b@example.org", request.Recipient);
            Assert.Equal("x", request.Instance);
        }
    }

    [Fact]
    public void TryRead_OneBytePerSegment_GivesTheSameRequest()
    {
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy());
        var request = new PolicyRequest();
        var (status, consumed) = Parse(Segment.OneBytePerSegment(data), request);
        Assert.Equal(PolicyReadStatus.Request, status);
        Assert.Equal(data.Length, consumed);
        Assert.Equal("192.0.2.7", request.ClientAddress);
    }

    [Fact]
    public void TryRead_FedByteByByte_ConsumesOnlyCompleteLines()
    {
        // As a socket delivers it: each call sees what is left plus one more byte.
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy(recipient: "c@example.org"));
        var parser = new PolicyRequestParser(Limits);
        var request = new PolicyRequest();
        int start = 0;
        PolicyReadStatus status = PolicyReadStatus.NeedMoreData;
        for (int end = 1; end <= data.Length; end++)
        {
            var buffer = new ReadOnlySequence<byte>(data, start, end - start);
            status = parser.TryRead(ref buffer, request);
            int consumed = (int)(end - start - buffer.Length);
            if (status == PolicyReadStatus.NeedMoreData)
            {
                // Only whole lines are consumed: what is left never holds a newline.
                Assert.DoesNotContain((byte)'\n', data.AsSpan(start + consumed, end - start - consumed).ToArray());
            }
            start += consumed;
        }
        Assert.Equal(PolicyReadStatus.Request, status);
        Assert.Equal(data.Length, start);
        Assert.Equal("c@example.org", request.Recipient);
    }

    [Fact]
    public void TryRead_Incomplete_ConsumesNothingOfThePartialLine()
    {
        byte[] data = Encoding.UTF8.GetBytes("request=smtpd_access_policy\nclient_addr");
        var request = new PolicyRequest();
        var (status, consumed) = Parse(new ReadOnlySequence<byte>(data), request);
        Assert.Equal(PolicyReadStatus.NeedMoreData, status);
        Assert.Equal("request=smtpd_access_policy\n".Length, consumed);
        Assert.Null(request.ClientAddress);
    }

    [Fact]
    public void TryRead_Crlf_IsTolerated()
    {
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy().Replace("\n", "\r\n", StringComparison.Ordinal));
        var request = new PolicyRequest();
        var (status, _) = Parse(new ReadOnlySequence<byte>(data), request);
        Assert.Equal(PolicyReadStatus.Request, status);
        Assert.Equal("b@example.org", request.Recipient);
        Assert.Equal("mx.example.net", request.ClientName);
    }

    [Fact]
    public void TryRead_LongValue_IsCutTo512Bytes()
    {
        string longName = new('x', 600);
        byte[] data = Encoding.UTF8.GetBytes($"client_name={longName}\n\n");
        var request = new PolicyRequest();
        Parse(new ReadOnlySequence<byte>(data), request);
        Assert.Equal(new string('x', 512), request.ClientName);
    }

    [Fact]
    public void TryRead_ValueWithEquals_KeepsEverythingAfterTheFirstEquals()
    {
        var request = new PolicyRequest();
        Parse(new ReadOnlySequence<byte>("sender=prvs=1234567890=x@y\n\n"u8.ToArray()), request);
        Assert.Equal("prvs=1234567890=x@y", request.Sender);
    }

    [Fact]
    public void TryRead_LeadingEquals_AreSkippedAsPostgreysUnanchoredRegexDoes()
    {
        var request = new PolicyRequest();
        Parse(new ReadOnlySequence<byte>("==recipient=r@x\n\n"u8.ToArray()), request);
        Assert.Equal("r@x", request.Recipient);
    }

    [Fact]
    public void TryRead_GarbageLine_IsReportedAndSkipped()
    {
        var parser = new PolicyRequestParser(Limits);
        var request = new PolicyRequest();
        var buffer = new ReadOnlySequence<byte>("this is garbage\nrecipient=r@x\n\n"u8.ToArray());

        Assert.Equal(PolicyReadStatus.GarbageLine, parser.TryRead(ref buffer, request));
        Assert.Equal("this is garbage", parser.LastGarbage);
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, request));
        Assert.Equal("r@x", request.Recipient);
    }

    [Fact]
    public void TryRead_GarbageLine_IsCutTo100Bytes()
    {
        var parser = new PolicyRequestParser(Limits);
        var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes("\u001b[31m" + new string('g', 200) + "\n"));
        Assert.Equal(PolicyReadStatus.GarbageLine, parser.TryRead(ref buffer, new PolicyRequest()));
        Assert.Equal("\u001b[31m" + new string('g', 95), parser.LastGarbage);
    }

    [Fact]
    public void TryRead_Utf8Values_AreDecoded()
    {
        var request = new PolicyRequest();
        Parse(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes("recipient=jörg@exämple.org\n\n")), request);
        Assert.Equal("jörg@exämple.org", request.Recipient);
    }

    [Fact]
    public void TryRead_RepeatedValueOnOneConnection_ReusesTheString()
    {
        var parser = new PolicyRequestParser(Limits);
        var first = new PolicyRequest();
        var second = new PolicyRequest();
        byte[] data = Encoding.UTF8.GetBytes(Requests.Policy());
        Parse(new ReadOnlySequence<byte>(data), first, parser);
        Parse(new ReadOnlySequence<byte>(data), second, parser);
        Assert.Same(first.ClientAddress, second.ClientAddress);
        Assert.Same(first.Recipient, second.Recipient);
    }

    [Fact]
    public void TryRead_LineAtTheLimit_IsAccepted()
    {
        var limits = new PolicyLimits { MaxLineBytes = 64 };
        string line = "client_name=" + new string('n', 64 - "client_name=".Length);
        var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(line + "\r\n\n"));
        Assert.Equal(PolicyReadStatus.Request, new PolicyRequestParser(limits).TryRead(ref buffer, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_LineOneOverTheLimit_IsTooLong()
    {
        var limits = new PolicyLimits { MaxLineBytes = 64 };
        string line = "client_name=" + new string('n', 65 - "client_name=".Length);
        var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(line + "\n\n"));
        Assert.Equal(PolicyReadStatus.LineTooLong, new PolicyRequestParser(limits).TryRead(ref buffer, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_EndlessLineWithoutNewline_IsTooLongOnceOverTheLimit()
    {
        var limits = new PolicyLimits { MaxLineBytes = 64 };
        var parser = new PolicyRequestParser(limits);
        var atLimit = new ReadOnlySequence<byte>(new byte[65]); // 64 + room for a CR
        Assert.Equal(PolicyReadStatus.NeedMoreData, parser.TryRead(ref atLimit, new PolicyRequest()));
        var over = new ReadOnlySequence<byte>(new byte[66]);
        Assert.Equal(PolicyReadStatus.LineTooLong, parser.TryRead(ref over, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_AttributesAtAndOverTheLimit()
    {
        var limits = new PolicyLimits { MaxAttributesPerRequest = 3 };
        var ok = new ReadOnlySequence<byte>("a=1\nb=2\nc=3\n\n"u8.ToArray());
        Assert.Equal(PolicyReadStatus.Request, new PolicyRequestParser(limits).TryRead(ref ok, new PolicyRequest()));
        var over = new ReadOnlySequence<byte>("a=1\nb=2\nc=3\nd=4\n\n"u8.ToArray());
        Assert.Equal(PolicyReadStatus.TooManyAttributes, new PolicyRequestParser(limits).TryRead(ref over, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_RequestBytesAtAndOverTheLimit()
    {
        var limits = new PolicyLimits { MaxRequestBytes = 12 };
        var ok = new ReadOnlySequence<byte>("a=123\nb=456\n\n"u8.ToArray()); // 6 + 6 bytes
        Assert.Equal(PolicyReadStatus.Request, new PolicyRequestParser(limits).TryRead(ref ok, new PolicyRequest()));
        var over = new ReadOnlySequence<byte>("a=123\nb=4567\n\n"u8.ToArray());
        Assert.Equal(PolicyReadStatus.RequestTooLarge, new PolicyRequestParser(limits).TryRead(ref over, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_CountsStartAgainForEachRequest()
    {
        var limits = new PolicyLimits { MaxAttributesPerRequest = 2 };
        var parser = new PolicyRequestParser(limits);
        var buffer = new ReadOnlySequence<byte>("a=1\nb=2\n\nc=3\nd=4\n\n"u8.ToArray());
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, new PolicyRequest()));
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, new PolicyRequest()));
    }

    [Fact]
    public void TryRead_TwoPipelinedRequests_AreReadOneAfterTheOther()
    {
        var parser = new PolicyRequestParser(Limits);
        var request = new PolicyRequest();
        var buffer = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(Requests.Policy(recipient: "one@x") + Requests.Policy(recipient: "two@x")));
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, request));
        Assert.Equal("one@x", request.Recipient);
        request.Reset();
        Assert.Equal(PolicyReadStatus.Request, parser.TryRead(ref buffer, request));
        Assert.Equal("two@x", request.Recipient);
        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void ResponseWriter_WritesActionAndEmptyLine()
    {
        var output = new ArrayBufferWriter<byte>();
        PolicyResponseWriter.Write(output, "DEFER_IF_PERMIT Greylisted\nX");
        Assert.Equal("action=DEFER_IF_PERMIT Greylisted X\n\n", Encoding.UTF8.GetString(output.WrittenSpan));
    }
}
