namespace Postgrey.Core.Whitelists;

/// <summary>Compares strings with ASCII-only case folding; spans can be looked up without allocating.</summary>
internal sealed class AsciiIgnoreCaseComparer : IEqualityComparer<string>, IAlternateEqualityComparer<ReadOnlySpan<char>, string>
{
    public static readonly AsciiIgnoreCaseComparer Instance = new();

    public bool Equals(string? x, string? y) =>
        ReferenceEquals(x, y) || (x is not null && y is not null && AsciiText.EqualsIgnoreCase(x, y));

    public int GetHashCode(string obj) => GetHashCode(obj.AsSpan());

    public bool Equals(ReadOnlySpan<char> alternate, string other) => AsciiText.EqualsIgnoreCase(alternate, other);

    public int GetHashCode(ReadOnlySpan<char> alternate)
    {
        var hash = new HashCode();
        foreach (char c in alternate)
        {
            hash.Add(AsciiText.Fold(c));
        }
        return hash.ToHashCode();
    }

    public string Create(ReadOnlySpan<char> alternate) => alternate.ToString();
}
