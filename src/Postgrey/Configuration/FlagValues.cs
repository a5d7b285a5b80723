using System.Globalization;
using Postgrey.Logging;

namespace Postgrey.Configuration;

/// <summary>--socketmode: a Unix file mode, written in octal as postgrey takes and shows it (0666).</summary>
internal readonly record struct OctalMode(UnixFileMode Mode)
{
    public static bool TryParse(string text, out OctalMode mode, out string error)
    {
        mode = default;
        error = "an octal mode such as 0660 is expected";
        if (text.Length is < 1 or > 4 || !text.All(c => c is >= '0' and <= '7'))
        {
            return false;
        }
        mode = new OctalMode((UnixFileMode)Convert.ToInt32(text, 8));
        return true;
    }

    public override string ToString() => "0" + Convert.ToString((int)Mode, 8).PadLeft(3, '0');
}

/// <summary>--retry-window: N days, or Nh hours, as postgrey writes it.</summary>
internal readonly record struct RetryWindow(long Seconds)
{
    private const long Day = 86400;
    private const long Hour = 3600;

    public static bool TryParse(string text, out RetryWindow window, out string error)
    {
        window = default;
        error = "must be either a number of days or a number followed by 'h' for hours ('6h' for example)";
        bool hours = text.EndsWith('h') || text.EndsWith('H');
        string digits = hours ? text[..^1] : text;
        // Nine digits at most: the seconds then stay far inside a long.
        if (digits.Length is < 1 or > 9 || !digits.All(char.IsAsciiDigit))
        {
            return false;
        }
        long n = long.Parse(digits, CultureInfo.InvariantCulture);
        window = new RetryWindow(hours ? n * Hour : n * Day);
        return true;
    }

    public override string ToString() => Seconds % Day == 0
        ? (Seconds / Day).ToString(CultureInfo.InvariantCulture)
        : (Seconds / Hour).ToString(CultureInfo.InvariantCulture) + "h";
}

/// <summary>--syslog-facility: the name given (shown in help) and its number.</summary>
internal readonly record struct FacilityName(string Name, int Code)
{
    public static bool TryParse(string text, out FacilityName facility, out string error)
    {
        error = $"one of {SyslogFacility.Names} is expected";
        bool known = SyslogFacility.TryParse(text, out int code);
        facility = known ? new FacilityName(text, code) : default;
        return known;
    }

    /// <summary>The name of a facility number (the options record keeps the number).</summary>
    public static FacilityName Of(int code) =>
        SyslogFacility.Names.Split(", ").Select(name => TryParse(name, out var f, out _) ? f : default).First(f => f.Code == code && f.Name is not null);

    public override string ToString() => Name;
}

/// <summary>--db-password-file: the password on its first line, read at start (while still
/// root, so the file may be root's alone).</summary>
internal readonly record struct DbPassword(string Password)
{
    public override string ToString() => "(password)";

    public static bool TryRead(string path, out DbPassword password, out string error)
    {
        try
        {
            password = new DbPassword(File.ReadLines(path).FirstOrDefault() ?? "");
            error = "";
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            password = default;
            error = ex.Message;
            return false;
        }
    }
}
