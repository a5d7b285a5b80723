using System.Buffers;
using System.Text;

namespace Postgrey.Core.Protocol;

/// <summary>Writes <c>action=TEXT\n\n</c> straight into the output buffer.</summary>
public static class PolicyResponseWriter
{
    public static void Write(IBufferWriter<byte> output, string action)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(action);
        int max = 7 + Encoding.UTF8.GetMaxByteCount(action.Length) + 2;
        Span<byte> span = output.GetSpan(max);
        "action="u8.CopyTo(span);
        int n = 7 + Encoding.UTF8.GetBytes(action, span[7..]);
        // A newline inside the action would end the reply early and desynchronise Postfix.
        foreach (ref byte b in span[7..n])
        {
            if (b is (byte)'\n' or (byte)'\r')
            {
                b = (byte)' ';
            }
        }
        span[n++] = (byte)'\n';
        span[n++] = (byte)'\n';
        output.Advance(n);
    }
}
