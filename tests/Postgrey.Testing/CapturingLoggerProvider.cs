using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Postgrey.Testing;

/// <summary>Keeps every formatted log message, to assert postgrey's log lines byte for byte. A
/// null value in a <c>label={Field}</c> position is left out with its label (and a null first
/// field with the <c>: </c> after it), as the service's log formatter does
/// (src/Postgrey/Logging/NetServerLogFormatter.cs): the decision line is one template with
/// optional fields.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<(string Category, LogLevel Level, string Message, Exception? Exception)> _entries = new();

    public IReadOnlyList<(string Category, LogLevel Level, string Message, Exception? Exception)> Entries => _entries.ToArray();

    public IEnumerable<string> Messages(string? category = null) =>
        _entries.Where(e => category is null || e.Category == category).Select(e => e.Message);

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _entries);

    public void Dispose()
    {
    }

    private sealed class Logger(string category, ConcurrentQueue<(string, LogLevel, string, Exception?)> entries) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            entries.Enqueue((category, logLevel, Render(state) ?? formatter(state, exception), exception));
    }

    /// <summary>The template with its values when one of them is null; else null (MEL's own text).</summary>
    private static string? Render<TState>(TState state)
    {
        if (state is not IReadOnlyList<KeyValuePair<string, object?>> values
            || !values.Any(v => v.Value is null)
            || values.FirstOrDefault(v => v.Key == "{OriginalFormat}").Value is not string template)
        {
            return null;
        }
        var output = new System.Text.StringBuilder();
        int textStart = 0;
        bool skipSeparator = false;
        int at = 0;
        while (at < template.Length)
        {
            int open = template.IndexOf('{', at);
            string text = template[at..(open < 0 ? template.Length : open)];
            if (skipSeparator && text.StartsWith(": ", StringComparison.Ordinal))
            {
                text = text[2..];
            }
            skipSeparator = false;
            textStart = output.Length;
            output.Append(text);
            if (open < 0)
            {
                break;
            }
            int close = template.IndexOf('}', open);
            string name = template[(open + 1)..close];
            object? value = values.FirstOrDefault(v => v.Key == name).Value;
            if (value is not null)
            {
                output.Append(Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture));
            }
            else if (open == 0)
            {
                skipSeparator = true;
            }
            else if (output.Length > textStart && output[^1] == '=')
            {
                int comma = output.ToString(textStart, output.Length - textStart).LastIndexOf(", ", StringComparison.Ordinal);
                output.Length = textStart + Math.Max(comma, 0);
            }
            else
            {
                output.Append("null");
            }
            at = close + 1;
        }
        return output.ToString();
    }
}
