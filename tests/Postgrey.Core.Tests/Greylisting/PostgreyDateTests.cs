using Postgrey.Core.Greylisting;

namespace Postgrey.Core.Tests.Greylisting;

public class PostgreyDateTests
{
    [Fact]
    public void Format_Utc_IsStrftimeInTheCLocale()
    {
        var when = new DateTimeOffset(2026, 11, 28, 3, 20, 0, TimeSpan.Zero);
        Assert.Equal("Sat, 28 Nov 2026 03:20:00 UTC", PostgreyDate.Format(when, TimeZoneInfo.Utc));
    }

    [Fact]
    public void Format_ZoneWithAbbreviation_UsesIt()
    {
        var zurich = TimeZoneInfo.FindSystemTimeZoneById("Europe/Zurich");
        var winter = new DateTimeOffset(2026, 1, 5, 12, 0, 0, TimeSpan.Zero);
        var summer = new DateTimeOffset(2026, 7, 5, 12, 0, 0, TimeSpan.Zero);
        Assert.Equal("Mon, 05 Jan 2026 13:00:00 CET", PostgreyDate.Format(winter, zurich));
        Assert.Equal("Sun, 05 Jul 2026 14:00:00 CEST", PostgreyDate.Format(summer, zurich));
    }
}
