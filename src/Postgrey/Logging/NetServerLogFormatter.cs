using System.Globalization;
using System.Text;
using Serilog.Events;
using Serilog.Formatting.Display;

namespace Postgrey.Hosting;

/// <summary>
/// Renders events as postgrey writes them: the bare message. On its console, Net::Server's
/// <c>write_to_log_hook</c> writes every byte outside printable ASCII as <c>%XX</c>, so an 8-bit
/// sender reads <c>j%C3%B6rg@...</c> there and no client byte can forge or break a line; to
/// syslog it passes the text as it is.
/// </summary>
internal static class NetServerLogFormatter
{
    // {Message:lj}: strings unquoted, so each line is exactly postgrey's.
    private static readonly MessageTemplateTextFormatter Message = new("{Message:lj}", CultureInfo.InvariantCulture);

    /// <summary>The message, then the exception (if any) line by line.</summary>
    public static IEnumerable<string> Lines(LogEvent logEvent)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        var text = new StringWriter(CultureInfo.InvariantCulture);
        Message.Format(logEvent, text);
        yield return text.ToString();
        if (logEvent.Exception is { } exception)
        {
            foreach (string line in exception.ToString().Split('\n'))
            {
                yield return line.TrimEnd('\r');
            }
        }
    }

    /// <summary>Net::Server's console escaping: bytes outside ' '..'~' (and newline) as %XX.</summary>
    public static string Escape(string text) => EscapeExcept(text, Printable);

    /// <summary>Control characters (and DEL) as %XX, 8-bit text kept: what a syslog line may hold.</summary>
    public static string EscapeControls(string text) => EscapeExcept(text, NotControl);

    private static string EscapeExcept(string text, System.Buffers.SearchValues<char> keep)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.AsSpan().ContainsAnyExcept(keep))
        {
            return text;
        }
        var sb = new StringBuilder(text.Length + 16);
        Span<byte> bytes = stackalloc byte[4];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (keep.Contains(c))
            {
                sb.Append(c);
                continue;
            }
            int length = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])
                ? Encoding.UTF8.GetBytes(text.AsSpan(i++, 2), bytes)
                : Encoding.UTF8.GetBytes(text.AsSpan(i, 1), bytes);
            foreach (byte b in bytes[..length])
            {
                sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }
        return sb.ToString();
    }

    // ' ' to '~', and the newline Net::Server keeps.
    private static readonly System.Buffers.SearchValues<char> Printable =
        System.Buffers.SearchValues.Create("\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");

    private static readonly System.Buffers.SearchValues<char> NotControl =
        System.Buffers.SearchValues.Create(Enumerable.Range(0x20, 0x7F - 0x20).Concat(Enumerable.Range(0x80, 0x10000 - 0x80)).Select(i => (char)i).ToArray());
}
