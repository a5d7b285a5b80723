namespace Postgrey.Core.Whitelists;

/// <summary>ASCII-only case folding, as Perl's /i on byte strings: SMTPUTF8 names stay as they are.</summary>
internal static class AsciiText
{
    public static bool EqualsIgnoreCase(ReadOnlySpan<char> a, ReadOnlySpan<char> b)
    {
        if (a.Length != b.Length)
        {
            return false;
        }
        for (int i = 0; i < a.Length; i++)
        {
            if (Fold(a[i]) != Fold(b[i]))
            {
                return false;
            }
        }
        return true;
    }

    public static bool StartsWithIgnoreCase(ReadOnlySpan<char> text, ReadOnlySpan<char> prefix) =>
        text.Length >= prefix.Length && EqualsIgnoreCase(text[..prefix.Length], prefix);

    public static char Fold(char c) => c is >= 'A' and <= 'Z' ? (char)(c + 32) : c;
}
