using Serilog.Events;

namespace Postgrey.Logging;

/// <summary>Syslog severities of our levels: postgrey's (Net::Server's) map of its log levels,
/// so that a filter on priorities sees what it saw with postgrey: warnings (postgrey level 1)
/// at warning, the action= lines (level 2) at notice, -v diagnostics (level 3) at info.</summary>
internal static class SyslogSeverity
{
    public static int Of(LogEventLevel level) => level switch
    {
        LogEventLevel.Fatal => 2, // crit
        LogEventLevel.Error => 3, // err
        LogEventLevel.Warning => 4, // warning
        LogEventLevel.Information => 5, // notice
        LogEventLevel.Debug => 6, // info
        _ => 7, // debug
    };
}

/// <summary>Syslog facility names as syslog(3) and Sys::Syslog take them.</summary>
internal static class SyslogFacility
{
    private static readonly Dictionary<string, int> Codes = new(StringComparer.OrdinalIgnoreCase)
    {
        ["kern"] = 0, ["user"] = 1, ["mail"] = 2, ["daemon"] = 3, ["auth"] = 4, ["syslog"] = 5,
        ["lpr"] = 6, ["news"] = 7, ["uucp"] = 8, ["cron"] = 9, ["authpriv"] = 10, ["ftp"] = 11,
        ["local0"] = 16, ["local1"] = 17, ["local2"] = 18, ["local3"] = 19,
        ["local4"] = 20, ["local5"] = 21, ["local6"] = 22, ["local7"] = 23,
    };

    public static bool TryParse(string name, out int code) => Codes.TryGetValue(name, out code);

    public static string Names => string.Join(", ", Codes.Keys);
}
