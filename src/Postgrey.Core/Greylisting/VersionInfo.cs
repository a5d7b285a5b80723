using System.Reflection;

namespace Postgrey.Core.Greylisting;

/// <summary>Version strings.</summary>
public static class VersionInfo
{
    /// <summary>The postgrey release whose behaviour this port reproduces; %v in the X-Greylist
    /// header, so that filters matching "postgrey-1.37" keep working.</summary>
    public const string PostgreyCompatible = "1.37";

    /// <summary>This project's own version.</summary>
    public static string Product { get; } =
        typeof(VersionInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? "0.0.0";
}
