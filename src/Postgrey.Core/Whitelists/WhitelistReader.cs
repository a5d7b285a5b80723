namespace Postgrey.Core.Whitelists;

/// <summary>Reads whitelist lines as postgrey does: '#' starts a comment anywhere, entries are
/// trimmed, blank lines skipped. Unlike postgrey it caps what one file can cost: a line longer
/// than <see cref="MaxLineChars"/> is skipped with a warning, and a file longer than
/// <see cref="MaxFileChars"/> (/dev/zero, a log given by mistake) is not used at all.</summary>
internal static class WhitelistReader
{
    /// <summary>A host name has at most 253 characters; a long regex a few hundred.</summary>
    public const int MaxLineChars = 16 * 1024;

    /// <summary>Postgrey's lists are a few KiB; this holds about a million entries.</summary>
    public const long MaxFileChars = 32L * 1024 * 1024;

    /// <summary>The entries of <paramref name="reader"/>, read whole before any is returned, so
    /// that a file over <see cref="MaxFileChars"/> gives none (<see cref="WhitelistTooLargeException"/>).
    /// Overlong lines are reported in <paramref name="warnings"/>.</summary>
    public static List<(int Line, string Entry)> Entries(TextReader reader, string source, ICollection<WhitelistWarning> warnings)
    {
        var entries = new List<(int, string)>();
        var lines = new BoundedLineReader(reader);
        while (lines.Next(out string? line))
        {
            if (line is null)
            {
                warnings.Add(new WhitelistWarning(source, lines.Number, $"longer than {MaxLineChars} characters; skipped"));
                continue;
            }
            int hash = line.IndexOf('#', StringComparison.Ordinal);
            if (hash >= 0)
            {
                line = line[..hash];
            }
            line = line.Trim();
            if (line.Length > 0)
            {
                entries.Add((lines.Number, line));
            }
        }
        return entries;
    }

    /// <summary>Feeds every entry to <paramref name="addEntry"/>, which returns why it refused one
    /// (reported with file and line) or null.</summary>
    public static void AddAll(TextReader reader, string source, ICollection<WhitelistWarning> warnings, Func<string, WhitelistEntryContext, string?> addEntry, Action<WhitelistWarning>? onRegexTimeout)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(warnings);
        foreach (var (line, entry) in Entries(reader, source, warnings))
        {
            if (addEntry(entry, new WhitelistEntryContext(source, line, warnings, onRegexTimeout)) is { } problem)
            {
                warnings.Add(new WhitelistWarning(source, line, problem));
            }
        }
    }

    public static bool HasWhiteSpace(string s)
    {
        foreach (char c in s)
        {
            if (char.IsWhiteSpace(c))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>TextReader.ReadLine's line ends (\n, \r, \r\n) without its unbounded line.</summary>
    private sealed class BoundedLineReader(TextReader reader)
    {
        private readonly char[] _buffer = new char[8192];
        private readonly System.Text.StringBuilder _line = new();
        private int _start;
        private int _end;
        private long _total;
        private bool _skipLineFeed;

        public int Number { get; private set; }

        /// <summary>False at the end; else true with the line, or null for an overlong one.</summary>
        public bool Next(out string? line)
        {
            _line.Clear();
            bool overlong = false;
            bool any = false;
            while (true)
            {
                if (_start == _end && !Fill())
                {
                    line = overlong ? null : _line.ToString();
                    if (any)
                    {
                        Number++;
                    }
                    return any;
                }
                if (_skipLineFeed)
                {
                    _skipLineFeed = false;
                    if (_buffer[_start] == '\n')
                    {
                        _start++;
                        continue;
                    }
                }
                any = true;
                ReadOnlySpan<char> rest = _buffer.AsSpan(_start, _end - _start);
                int eol = rest.IndexOfAny('\r', '\n');
                ReadOnlySpan<char> part = eol < 0 ? rest : rest[..eol];
                if (!overlong && _line.Length + part.Length > MaxLineChars)
                {
                    overlong = true;
                    _line.Clear(); // what follows is read and dropped
                }
                if (!overlong)
                {
                    _line.Append(part);
                }
                if (eol < 0)
                {
                    _start = _end;
                    continue;
                }
                _skipLineFeed = rest[eol] == '\r';
                _start += eol + 1;
                Number++;
                line = overlong ? null : _line.ToString();
                return true;
            }
        }

        private bool Fill()
        {
            _start = 0;
            _end = reader.Read(_buffer, 0, _buffer.Length);
            _total += _end;
            if (_total > MaxFileChars)
            {
                throw new WhitelistTooLargeException($"larger than {MaxFileChars / (1024 * 1024)} MiB: not used (a whitelist is a few KiB; is it the right file?)");
            }
            return _end > 0;
        }
    }
}

/// <summary>A whitelist file over <see cref="WhitelistReader.MaxFileChars"/>: it is not used,
/// as a file that cannot be read.</summary>
public sealed class WhitelistTooLargeException : IOException
{
    public WhitelistTooLargeException()
    {
    }

    public WhitelistTooLargeException(string message)
        : base(message)
    {
    }

    public WhitelistTooLargeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
