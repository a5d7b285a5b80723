using Postgrey.Configuration;
using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Compact;

namespace Postgrey.Logging;

/// <summary>The Serilog logger of the service: postgrey's levels, a formatter (postgrey's lines
/// or JSON) and one destination, written behind Serilog's batching.</summary>
internal static class PostgreyLogging
{
    /// <summary>Events waiting for one destination before new ones are dropped (and counted).</summary>
    public const int QueueLimit = 100_000;

    public static Logger CreateLogger(LoggingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return CreateLogger(options, CreateSink(options));
    }

    public static Logger CreateLogger(LoggingOptions options, BatchedSink sink)
    {
        ArgumentNullException.ThrowIfNull(options);
        // postgrey's levels: -q shows its level 1 (warnings, "whitelisted", "cleaning"), the
        // default adds the action= lines, -v adds our diagnostics.
        LogEventLevel level = options.Verbosity switch
        {
            Verbosity.Quiet => LogEventLevel.Warning,
            Verbosity.Verbose => LogEventLevel.Debug,
            _ => LogEventLevel.Information,
        };
        return new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .WriteTo.Batched(sink)
            .CreateLogger();
    }

    /// <summary>postgrey's lines, escaped for <paramref name="escaping"/>; or, with
    /// --log-format=json, one compact JSON object (CLEF: <c>@t</c>, <c>@mt</c>, <c>@l</c>, the
    /// properties) per line, whose escaping JSON does itself.</summary>
    public static ITextFormatter CreateFormatter(LogFormat format, LogEscaping escaping) => format switch
    {
        LogFormat.Json => new CompactJsonFormatter(),
        _ => new NetServerLogFormatter(escaping),
    };

    /// <summary>-d/--syslog: the syslog socket, as postgrey. A Windows service: the event log. Under systemd (its journal holds our
    /// stdout): journald's own socket, so that each line keeps its priority and facility; if that
    /// is out of reach, stdout with a priority prefix. Else the console, as postgrey. JSON goes to
    /// the same place as text would: the message of the syslog line or journal entry.</summary>
    private static BatchedSink CreateSink(LoggingOptions options)
    {
        if (options.Syslog)
        {
            return new SyslogSink(CreateFormatter(options.Format, LogEscaping.Controls), options.SyslogSocket, options.SyslogFacility, "postgrey");
        }
        if (OperatingSystem.IsWindows() && Microsoft.Extensions.Hosting.WindowsServices.WindowsServiceHelpers.IsWindowsService())
        {
            return new EventLogSink(CreateFormatter(options.Format, LogEscaping.Controls));
        }
        if (Environment.GetEnvironmentVariable("JOURNAL_STREAM") is { Length: > 0 })
        {
            var journal = new JournalSink(CreateFormatter(options.Format, LogEscaping.Controls), JournalSink.DefaultPath, options.SyslogFacility, "postgrey", TextWriter.Null);
            if (journal.Connected)
            {
                return journal;
            }
            journal.Dispose();
            return new ConsoleSink(CreateFormatter(options.Format, LogEscaping.NetServer), levelPrefix: true);
        }
        return new ConsoleSink(CreateFormatter(options.Format, LogEscaping.NetServer));
    }
}
