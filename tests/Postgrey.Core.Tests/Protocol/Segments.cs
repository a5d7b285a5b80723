using System.Buffers;

namespace Postgrey.Core.Tests.Protocol;

/// <summary>Builds multi-segment sequences, to feed the parser input split anywhere.</summary>
internal sealed class Segment : ReadOnlySequenceSegment<byte>
{
    public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

    public Segment Append(ReadOnlyMemory<byte> memory)
    {
        var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
        Next = next;
        return next;
    }

    public static ReadOnlySequence<byte> Split(byte[] data, params int[] cuts)
    {
        var bounds = new List<int> { 0 };
        bounds.AddRange(cuts.Where(c => c > 0 && c < data.Length).Distinct().Order());
        bounds.Add(data.Length);
        var first = new Segment(data.AsMemory(bounds[0], bounds[1] - bounds[0]));
        Segment last = first;
        for (int i = 1; i < bounds.Count - 1; i++)
        {
            last = last.Append(data.AsMemory(bounds[i], bounds[i + 1] - bounds[i]));
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    public static ReadOnlySequence<byte> OneBytePerSegment(byte[] data) =>
        Split(data, Enumerable.Range(1, Math.Max(0, data.Length - 1)).ToArray());
}
