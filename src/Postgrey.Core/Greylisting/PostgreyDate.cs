using System.Globalization;

namespace Postgrey.Core.Greylisting;

/// <summary>strftime("%a, %d %b %Y %T %Z") in the C locale, for %d in the X-Greylist header.</summary>
public static class PostgreyDate
{
    public static string Format(DateTimeOffset utcNow, TimeZoneInfo zone)
    {
        ArgumentNullException.ThrowIfNull(zone);
        DateTimeOffset local = TimeZoneInfo.ConvertTime(utcNow, zone);
        string name = zone.IsDaylightSavingTime(local) ? zone.DaylightName : zone.StandardName;
        if (name.Contains(' ', StringComparison.Ordinal) || name.Length == 0)
        {
            // Without ICU, .NET knows tzfile abbreviations (CET, EDT) but spells UTC out in full.
            name = local.Offset == TimeSpan.Zero ? "UTC" : local.ToString("zzz", CultureInfo.InvariantCulture).Replace(":", "", StringComparison.Ordinal);
        }
        return local.ToString("ddd, dd MMM yyyy HH:mm:ss ", CultureInfo.InvariantCulture) + name;
    }
}
