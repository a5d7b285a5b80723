using System.Buffers;
using System.Globalization;
using System.Text;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Parsing;

namespace Postgrey.Logging;

/// <summary>Which bytes a line may carry as they are.</summary>
internal enum LogEscaping
{
    /// <summary>Net::Server's console: every byte outside printable ASCII as <c>%XX</c>.</summary>
    NetServer,

    /// <summary>Syslog and journald: control characters as <c>%XX</c>, 8-bit text kept.</summary>
    Controls,
}

/// <summary>
/// Renders events as postgrey writes them: the bare message, then the exception line by line,
/// each line ended by a newline. A field whose value is null is left out with its label, as
/// postgrey's <c>mylog_action</c> leaves out empty attributes: the decision template
/// <c>{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, ...</c>
/// renders <c>action=pass, reason=triplet found, client_address=...</c> when there is no queue id,
/// delay or client name. On its console, Net::Server's <c>write_to_log_hook</c> writes every byte
/// outside printable ASCII as <c>%XX</c>, so an 8-bit sender reads <c>j%C3%B6rg@...</c> there and
/// no client byte can forge or break a line; to syslog postgrey passes 8-bit text as it is.
/// </summary>
internal sealed class NetServerLogFormatter(LogEscaping escaping) : ITextFormatter
{
    private readonly SearchValues<char> _keep = escaping == LogEscaping.NetServer ? Printable : NotControl;

    // Formatting runs on the sink's writer, one event at a time; the buffer is reused.
    [ThreadStatic]
    private static StringBuilder? t_message;

    public void Format(LogEvent logEvent, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        ArgumentNullException.ThrowIfNull(output);
        StringBuilder message = t_message ??= new StringBuilder(512);
        message.Clear();
        RenderMessage(logEvent, message);
        foreach (ReadOnlyMemory<char> chunk in message.GetChunks())
        {
            WriteEscaped(chunk.Span, _keep, output);
        }
        output.Write('\n');
        if (logEvent.Exception is { } exception)
        {
            foreach (string line in exception.ToString().Split('\n'))
            {
                WriteEscaped(line.AsSpan().TrimEnd('\r'), _keep, output);
                output.Write('\n');
            }
        }
    }

    /// <summary>The message template with its values, strings unquoted; a null value in a
    /// <c>label={Field}</c> position goes with its <c>, label=</c>, and a null first field with the
    /// <c>: </c> after it.</summary>
    internal static void RenderMessage(LogEvent logEvent, StringBuilder output)
    {
        int textStart = 0; // where the last text token begins in output
        bool skipSeparator = false;
        bool first = true;
        foreach (MessageTemplateToken token in logEvent.MessageTemplate.Tokens)
        {
            if (token is TextToken text)
            {
                ReadOnlySpan<char> value = text.Text;
                if (skipSeparator && value.StartsWith(": ", StringComparison.Ordinal))
                {
                    value = value[2..];
                }
                skipSeparator = false;
                textStart = output.Length;
                output.Append(value);
            }
            else if (token is PropertyToken property)
            {
                logEvent.Properties.TryGetValue(property.PropertyName, out LogEventPropertyValue? value);
                if (value is null or ScalarValue { Value: null })
                {
                    if (first)
                    {
                        skipSeparator = true;
                    }
                    else if (output.Length > textStart && output[^1] == '=')
                    {
                        string label = output.ToString(textStart, output.Length - textStart);
                        int comma = label.LastIndexOf(", ", StringComparison.Ordinal);
                        output.Length = textStart + Math.Max(comma, 0);
                    }
                    else
                    {
                        output.Append("null");
                    }
                }
                else
                {
                    AppendValue(value, property.Format, output);
                }
            }
            first = false;
        }
    }

    private static void AppendValue(LogEventPropertyValue value, string? format, StringBuilder output)
    {
        switch (value)
        {
            case ScalarValue { Value: string s }:
                output.Append(s);
                break;
            case ScalarValue { Value: IFormattable formattable }:
                output.Append(formattable.ToString(format, CultureInfo.InvariantCulture));
                break;
            default:
                using (var writer = new StringWriter(output, CultureInfo.InvariantCulture))
                {
                    value.Render(writer, format, CultureInfo.InvariantCulture);
                }
                break;
        }
    }

    /// <summary>Net::Server's console escaping: bytes outside ' '..'~' (and newline) as %XX.</summary>
    public static string Escape(string text) => EscapeExcept(text, Printable);

    /// <summary>Control characters (and DEL) as %XX, 8-bit text kept: what a syslog line may hold.</summary>
    public static string EscapeControls(string text) => EscapeExcept(text, NotControl);

    private static string EscapeExcept(string text, SearchValues<char> keep)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!text.AsSpan().ContainsAnyExcept(keep))
        {
            return text;
        }
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        WriteEscaped(text, keep, output);
        return output.ToString();
    }

    private static void WriteEscaped(ReadOnlySpan<char> text, SearchValues<char> keep, TextWriter output)
    {
        Span<byte> bytes = stackalloc byte[4];
        Span<char> hex = stackalloc char[3];
        hex[0] = '%';
        while (!text.IsEmpty)
        {
            int i = text.IndexOfAnyExcept(keep);
            if (i < 0)
            {
                output.Write(text);
                return;
            }
            output.Write(text[..i]);
            int chars = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            int length = Encoding.UTF8.GetBytes(text.Slice(i, chars), bytes);
            foreach (byte b in bytes[..length])
            {
                b.TryFormat(hex[1..], out _, "X2", CultureInfo.InvariantCulture);
                output.Write(hex);
            }
            text = text[(i + chars)..];
        }
    }

    // ' ' to '~', and the newline Net::Server keeps.
    private static readonly SearchValues<char> Printable =
        SearchValues.Create("\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");

    private static readonly SearchValues<char> NotControl =
        SearchValues.Create(Enumerable.Range(0x20, 0x7F - 0x20).Concat(Enumerable.Range(0x80, 0x10000 - 0x80)).Select(i => (char)i).ToArray());
}
