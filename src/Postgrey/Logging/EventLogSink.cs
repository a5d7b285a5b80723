using System.Diagnostics;
using System.Globalization;
using System.Runtime.Versioning;
using Serilog.Events;
using Serilog.Formatting;

namespace Postgrey.Logging;

/// <summary>
/// Run as a Windows service there is no console: lines go to the Application event log under
/// the source "postgrey" (registered by packaging/windows/postgrey-service.ps1), with the
/// entry type of their level.
/// </summary>
[SupportedOSPlatform("windows")]
internal sealed class EventLogSink(ITextFormatter formatter) : BatchedSink(formatter, PostgreyLogging.QueueLimit)
{
    private readonly EventLog _log = new("Application") { Source = "postgrey" };

    protected override void Write(IReadOnlyCollection<LogEvent> batch)
    {
        foreach (LogEvent logEvent in batch)
        {
            EventLogEntryType type = logEvent.Level switch
            {
                >= LogEventLevel.Error => EventLogEntryType.Error,
                LogEventLevel.Warning => EventLogEntryType.Warning,
                _ => EventLogEntryType.Information,
            };
            using var text = new StringWriter(CultureInfo.InvariantCulture);
            Formatter.Format(logEvent, text);
            try
            {
                _log.WriteEntry(text.ToString().TrimEnd('\n').Replace("\n", Environment.NewLine, StringComparison.Ordinal), type);
            }
            catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception or ArgumentException)
            {
                // the source is not registered or the log is full: keep serving
            }
        }
    }

    protected override void Close() => _log.Dispose();
}
