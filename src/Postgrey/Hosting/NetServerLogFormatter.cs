using System.Globalization;
using System.Text;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Display;

namespace Postgrey.Hosting;

/// <summary>
/// Writes each event as postgrey writes it to its console: the bare message, and every byte
/// outside printable ASCII written as <c>%XX</c> (Net::Server's <c>write_to_log_hook</c>), so an
/// 8-bit sender reads <c>j%C3%B6rg@...</c> in both and no client byte can forge or break a line.
/// </summary>
internal sealed class NetServerLogFormatter : ITextFormatter
{
    private readonly MessageTemplateTextFormatter _inner =
        // {Message:lj}: strings unquoted, so each line is exactly postgrey's.
        new("{Message:lj}{NewLine}{Exception}", CultureInfo.InvariantCulture);

    public void Format(LogEvent logEvent, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var text = new StringWriter(CultureInfo.InvariantCulture);
        _inner.Format(logEvent, text);
        output.Write(Escape(text.ToString()));
    }

    public static string Escape(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.AsSpan().ContainsAnyExcept(Printable))
        {
            return text;
        }
        var sb = new StringBuilder(text.Length + 16);
        Span<byte> bytes = stackalloc byte[4];
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (Printable.Contains(c))
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

    // ' ' to '~' and the newline that ends a line.
    private static readonly System.Buffers.SearchValues<char> Printable =
        System.Buffers.SearchValues.Create("\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");
}
