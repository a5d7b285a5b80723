using Microsoft.Extensions.Logging;
using Postgrey.Core.Whitelists;

namespace Postgrey.Hosting;

/// <summary>
/// Finds and reads the whitelist files. Defaults follow the installation: Debian's
/// /etc/postgrey/... when that directory exists, postgrey's /etc/postfix/... otherwise;
/// %ProgramData%\postgrey\... on Windows. A missing
/// file is a warning, except a ".local" one (silent), as in postgrey.
/// </summary>
internal sealed partial class WhitelistFiles
{
    private readonly IReadOnlyList<string> _clientFiles;
    private readonly IReadOnlyList<string> _recipientFiles;
    private readonly ILogger _logger;
    private readonly Action<WhitelistWarning> _onRegexTimeout;

    public WhitelistFiles(IReadOnlyList<string>? clientFiles, IReadOnlyList<string>? recipientFiles, ILogger logger)
    {
        string? dir = OperatingSystem.IsWindows()
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.CommonApplicationData), "postgrey")
            : Directory.Exists("/etc/postgrey") ? "/etc/postgrey" : null;
        _clientFiles = clientFiles ?? (dir is not null
            ? [Path.Combine(dir, "whitelist_clients"), Path.Combine(dir, "whitelist_clients.local")]
            : ["/etc/postfix/postgrey_whitelist_clients", "/etc/postfix/postgrey_whitelist_clients.local"]);
        _recipientFiles = recipientFiles ?? (dir is not null
            ? [Path.Combine(dir, "whitelist_recipients"), Path.Combine(dir, "whitelist_recipients.local")]
            : ["/etc/postfix/postgrey_whitelist_recipients"]);
        _logger = logger;
        _onRegexTimeout = warning => Log.RegexTimedOut(_logger, warning.ToString());
    }

    /// <summary>The client whitelist files, given or the defaults.</summary>
    public IReadOnlyList<string> ClientFiles => _clientFiles;

    /// <summary>The recipient whitelist files, given or the defaults.</summary>
    public IReadOnlyList<string> RecipientFiles => _recipientFiles;

    /// <summary>
    /// Reads every file. Returns null when a file that should be there could not be read and
    /// <paramref name="requireAll"/> is set (a reload then keeps the lists in force).
    /// </summary>
    public WhitelistSet? Load(bool requireAll)
    {
        var warnings = new List<WhitelistWarning>();
        bool complete = true;
        var clients = new ClientWhitelist.Builder { OnRegexTimeout = _onRegexTimeout };
        foreach (string file in _clientFiles)
        {
            complete &= Read(file, reader => clients.Add(reader, file, warnings));
        }
        var recipients = new RecipientWhitelist.Builder { OnRegexTimeout = _onRegexTimeout };
        foreach (string file in _recipientFiles)
        {
            complete &= Read(file, reader => recipients.Add(reader, file, warnings));
        }
        foreach (WhitelistWarning warning in warnings)
        {
            Log.BadEntry(_logger, warning.ToString());
        }
        if (!complete && requireAll)
        {
            return null;
        }
        var set = new WhitelistSet(clients.Build(), recipients.Build());
        Log.Loaded(_logger, set.Clients.NameCount, set.Clients.NetworkCount, set.Clients.RegexCount, set.Recipients.Count);
        return set;
    }

    private bool Read(string file, Action<TextReader> add)
    {
        try
        {
            using var reader = new StreamReader(file);
            add(reader);
            return true;
        }
        catch (WhitelistTooLargeException ex)
        {
            Log.TooLarge(_logger, file, ex.Message);
            return false;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            if (file.EndsWith(".local", StringComparison.Ordinal) && ex is FileNotFoundException or DirectoryNotFoundException)
            {
                return true; // maybe the admin just doesn't have one
            }
            Log.CantOpen(_logger, file, ex.Message);
            return false;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(5101, LogLevel.Warning, "{Warning}", EventName = "WhitelistBadEntry")]
        public static partial void BadEntry(ILogger logger, string warning);

        [LoggerMessage(5102, LogLevel.Warning, "can't open {File}: {Reason}", EventName = "WhitelistCantOpen")]
        public static partial void CantOpen(ILogger logger, string file, string reason);

        [LoggerMessage(5104, LogLevel.Warning, "{File}: {Reason}", EventName = "WhitelistTooLarge")]
        public static partial void TooLarge(ILogger logger, string file, string reason);

        [LoggerMessage(5105, LogLevel.Warning, "{Warning}", EventName = "WhitelistRegexTimedOut")]
        public static partial void RegexTimedOut(ILogger logger, string warning);

        [LoggerMessage(5103, LogLevel.Information, "whitelists: {Names} client names, {Networks} client networks, {Regexes} client regexes, {Recipients} recipient entries", EventName = "WhitelistsLoaded")]
        public static partial void Loaded(ILogger logger, int names, int networks, int regexes, int recipients);
    }
}
