using System.Diagnostics;
using System.Runtime.Versioning;
using Serilog.Events;

namespace Postgrey.Hosting;

/// <summary>
/// Run as a Windows service there is no console: lines go to the Application event log under
/// the source "postgrey" (registered by packaging/windows/postgrey-service.ps1), with the
/// entry type of their level.
/// </summary>
[SupportedOSPlatform("windows")]
internal sealed class EventLogSink : BufferedSink
{
    private readonly EventLog _log = new("Application") { Source = "postgrey" };

    public EventLogSink() => Start();

    protected override void Write(List<LogEvent> batch)
    {
        foreach (LogEvent logEvent in batch)
        {
            EventLogEntryType type = logEvent.Level switch
            {
                >= LogEventLevel.Error => EventLogEntryType.Error,
                LogEventLevel.Warning => EventLogEntryType.Warning,
                _ => EventLogEntryType.Information,
            };
            try
            {
                _log.WriteEntry(string.Join(Environment.NewLine, NetServerLogFormatter.Lines(logEvent)), type);
            }
            catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception or ArgumentException)
            {
                // the source is not registered or the log is full: keep serving
            }
        }
    }

    protected override void Close() => _log.Dispose();
}
