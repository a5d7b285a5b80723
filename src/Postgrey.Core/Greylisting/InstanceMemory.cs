namespace Postgrey.Core.Greylisting;

/// <summary>
/// The message instances recently given an X-Greylist header, so that a message with several
/// recipients gets it once. postgrey keeps 10, which lets headers repeat when many connections
/// interleave; this keeps a configurable number, oldest forgotten first.
/// </summary>
internal sealed class InstanceMemory(int capacity)
{
    private readonly HashSet<string> _seen = new(StringComparer.Ordinal);
    private readonly Queue<string> _order = new();
    private readonly Lock _lock = new();

    /// <summary>True, and remembered, if <paramref name="instance"/> was not seen recently. No
    /// instance (Exim) always counts as new.</summary>
    public bool IsNew(string? instance)
    {
        if (instance is null)
        {
            return true;
        }
        lock (_lock)
        {
            if (!_seen.Add(instance))
            {
                return false;
            }
            _order.Enqueue(instance);
            if (_order.Count > Math.Max(1, capacity))
            {
                _seen.Remove(_order.Dequeue());
            }
            return true;
        }
    }
}
