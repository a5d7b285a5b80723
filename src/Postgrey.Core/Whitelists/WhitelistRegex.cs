using System.Text.RegularExpressions;

namespace Postgrey.Core.Whitelists;

/// <summary>
/// A <c>/regex/</c> whitelist entry: case-insensitive, as postgrey's <c>qr{...}i</c>. It runs on
/// the connection loop, against a client_name an attacker chooses (his PTR record), so it is
/// compiled for the non-backtracking engine, whose time is linear in the input (at most 512
/// characters): <c>/^(a+)+$/</c> costs what <c>/^a+$/</c> costs. A pattern that engine cannot
/// compile (backreferences, lookarounds, atomic groups) falls back to the backtracking engine
/// with a short timeout, said with file and line; a match that times out counts as no match and
/// is said once per entry. The linear engine has no timeout: its cost is bounded by the input
/// (at most 512 characters) and the pattern, and a wall-clock timeout only fails matches
/// spuriously when the machine is busy (or on the first match, which compiled the engine's
/// code: each regex is matched once when it is loaded, off the loop, for that).
/// </summary>
internal sealed class WhitelistRegex
{
    private const RegexOptions Options = RegexOptions.IgnoreCase | RegexOptions.CultureInvariant;

    /// <summary>Per backtracking entry and request, the time the loop may lose to one entry.</summary>
    public static readonly TimeSpan FallbackMatchTimeout = TimeSpan.FromMilliseconds(10);

    private readonly Regex _regex;
    private readonly string _source;
    private readonly int _line;
    private readonly Action<WhitelistWarning>? _onTimeout;
    private int _timedOut;

    private WhitelistRegex(Regex regex, string source, int line, Action<WhitelistWarning>? onTimeout)
    {
        _regex = regex;
        _source = source;
        _line = line;
        _onTimeout = onTimeout;
    }

    /// <summary>True when it runs on the linear-time engine.</summary>
    public bool IsLinear => (_regex.Options & RegexOptions.NonBacktracking) != 0;

    public override string ToString() => _regex.ToString();

    /// <summary>Returns the regex body of a <c>/\S+/</c> line, or null.</summary>
    public static string? Body(string entry)
    {
        if (entry.Length >= 3 && entry[0] == '/' && entry[^1] == '/')
        {
            string body = entry[1..^1];
            foreach (char c in body)
            {
                if (char.IsWhiteSpace(c))
                {
                    return null;
                }
            }
            return body;
        }
        return null;
    }

    /// <summary>For a <c>/regex/</c> entry: true, with the compiled regex added to
    /// <paramref name="regexes"/> or the reason it does not compile in <paramref name="problem"/>;
    /// a fallback to the backtracking engine is told to the context's warnings. False for
    /// any other entry.</summary>
    public static bool TryAdd(string entry, WhitelistEntryContext context, List<WhitelistRegex> regexes, out string? problem)
    {
        problem = null;
        if (Body(entry) is not { } body)
        {
            return false;
        }
        Regex regex;
        try
        {
            regex = new Regex(body, Options | RegexOptions.NonBacktracking);
        }
        catch (NotSupportedException ex)
        {
            try
            {
                regex = new Regex(body, Options, FallbackMatchTimeout);
            }
            catch (ArgumentException invalid)
            {
                problem = $"invalid regular expression: {invalid.Message}";
                return true;
            }
            context.Warnings?.Add(new WhitelistWarning(context.Source, context.Line,
                $"regex needs the backtracking engine ({ex.Message}): it is used, with a {FallbackMatchTimeout.TotalMilliseconds} ms match timeout"));
        }
        catch (ArgumentException ex)
        {
            problem = $"invalid regular expression: {ex.Message}";
            return true;
        }
        try
        {
            regex.IsMatch("warm-up.example");
        }
        catch (RegexMatchTimeoutException)
        {
            // The first match of the process, compiling the engine; only its result was wanted.
        }
        regexes.Add(new WhitelistRegex(regex, context.Source, context.Line, context.OnRegexTimeout));
        return true;
    }

    /// <summary>A match that ran past its timeout counts as no match; the first one of this
    /// entry is reported.</summary>
    public bool IsMatch(string input)
    {
        try
        {
            return _regex.IsMatch(input);
        }
        catch (RegexMatchTimeoutException)
        {
            if (_onTimeout is not null && Interlocked.Exchange(ref _timedOut, 1) == 0)
            {
                _onTimeout(new WhitelistWarning(_source, _line,
                    $"regex timed out after {_regex.MatchTimeout.TotalMilliseconds} ms and counts as no match (said once per entry)"));
            }
            return false;
        }
    }
}

/// <summary>Where an entry comes from, and where its warnings go.</summary>
internal readonly record struct WhitelistEntryContext(string Source, int Line, ICollection<WhitelistWarning>? Warnings, Action<WhitelistWarning>? OnRegexTimeout);
