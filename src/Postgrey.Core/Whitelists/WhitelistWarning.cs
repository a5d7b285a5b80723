namespace Postgrey.Core.Whitelists;

/// <summary>A whitelist line that was skipped or that the admin should look at, with postgrey's
/// wording ("FILE line N: ...").</summary>
public sealed record WhitelistWarning(string Source, int Line, string Message)
{
    public override string ToString() => Line > 0 ? $"{Source} line {Line}: {Message}" : $"{Source}: {Message}";
}
