using System.CommandLine;
using System.CommandLine.Help;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Postgrey.Configuration;
using Postgrey.Core.Whitelists;
using Postgrey.Hosting;

namespace Postgrey.Tools;

/// <summary>
/// <c>postgrey check-whitelists</c>: every line the service would skip (with file and line), regexes
/// that do not compile or run past their match timeout (errors: exit 1), and entries that change
/// nothing, duplicates and entries another one already covers (warnings). Each entry is judged
/// by the service's own parsing and matching (<see cref="WhitelistEntries"/>), so that an admin,
/// or ExecReload, can check the files before the service reads them.
/// </summary>
internal static class CheckWhitelistsCommand
{
    private const string Name = "check-whitelists";

    public static Command Create()
    {
        var flags = new PostgreyCommandLine();
        var files = new Argument<string[]>("files")
        {
            Description = "whitelist files; one whose name holds \"recipient\" is a recipient whitelist, any other a client whitelist (default: the files the service reads with these flags: --whitelist-clients, --whitelist-recipients, or the defaults)",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var command = new Command(Name, "Check whitelist files as the service reads them: bad lines and regexes (errors, exit 1), duplicates and entries another covers (warnings). The service's other flags are accepted and ignored, so its command line can be given as is.")
        {
            files,
        };
        Option[] shown = [flags.WhitelistClients, flags.WhitelistRecipients];
        foreach (Option option in flags.Options.Where(o => o is not HelpOption).ToList())
        {
            option.Hidden = !shown.Contains(option);
            command.Options.Add(option);
        }
        command.SetAction(r =>
        {
            string[] given = r.GetValue(files) ?? [];
            if (given.FirstOrDefault(f => f.Length > 1 && f[0] == '-') is { } unknown)
            {
                return ToolCommand.UsageError(Name, $"unrecognized option '{unknown}' (a file whose name starts with '-': ./{unknown})");
            }
            string[] clientFiles = r.GetValue(flags.WhitelistClients) ?? [];
            string[] recipientFiles = r.GetValue(flags.WhitelistRecipients) ?? [];
            // Without FILES: exactly the files the service, with these flags, reads.
            var service = new WhitelistFiles(
                clientFiles.Length > 0 ? clientFiles : null, recipientFiles.Length > 0 ? recipientFiles : null, NullLogger.Instance);
            IReadOnlyList<string> clients = given.Length > 0 ? [.. given.Where(f => !IsRecipientFile(f)), .. clientFiles] : service.ClientFiles;
            IReadOnlyList<string> recipients = given.Length > 0 ? [.. given.Where(IsRecipientFile), .. recipientFiles] : service.RecipientFiles;
            return Run(clients, recipients);
        });
        return command;
    }

    private static bool IsRecipientFile(string path) =>
        Path.GetFileName(path).Contains("recipient", StringComparison.OrdinalIgnoreCase);

    private static int Run(IReadOnlyList<string> clientFiles, IReadOnlyList<string> recipientFiles)
    {
        var report = new List<(WhitelistEntry At, bool Error, string Message)>();
        var clientEntries = Read(clientFiles, report);
        var recipientEntries = Read(recipientFiles, report);
        CheckClients(clientEntries, report);
        CheckRecipients(recipientEntries, report);

        int errors = 0;
        foreach (var (at, error, message) in report.OrderBy(r => r.At.Source, StringComparer.Ordinal).ThenBy(r => r.At.Line))
        {
            string where = at.Line > 0 ? $"{at.Source}:{at.Line}" : at.Source;
            Console.Out.WriteLine($"{where}: {(error ? "error" : "warning")}: {message}");
            errors += error ? 1 : 0;
        }
        int entries = clientEntries.Count + recipientEntries.Count;
        int files = clientFiles.Count + recipientFiles.Count;
        Console.Out.WriteLine($"{entries} entries in {files} files: {errors} errors, {report.Count - errors} warnings");
        return errors > 0 ? ToolCommand.Failure : 0;
    }

    /// <summary>The entries of every file; a file that can't be read is an error, except a
    /// missing ".local" one, which the service takes as none.</summary>
    private static List<WhitelistEntry> Read(IReadOnlyList<string> files, List<(WhitelistEntry, bool, string)> report)
    {
        var entries = new List<WhitelistEntry>();
        foreach (string file in files)
        {
            var warnings = new List<WhitelistWarning>();
            try
            {
                using var reader = new StreamReader(file);
                entries.AddRange(WhitelistEntries.Read(reader, file, warnings));
            }
            catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException && file.EndsWith(".local", StringComparison.Ordinal))
            {
                // optional, as in postgrey
            }
            catch (WhitelistTooLargeException ex)
            {
                report.Add((new WhitelistEntry(file, 0, ""), true, ex.Message));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                report.Add((new WhitelistEntry(file, 0, ""), true, $"can't open: {ex.Message}"));
            }
            report.AddRange(warnings.Select(w => (new WhitelistEntry(w.Source, w.Line, ""), true, w.Message)));
        }
        return entries;
    }

    private static void CheckClients(List<WhitelistEntry> entries, List<(WhitelistEntry, bool, string)> report)
    {
        var usable = new List<(WhitelistEntry Entry, ClientWhitelist List, IPAddress? Network, int Prefix)>();
        foreach (WhitelistEntry entry in entries)
        {
            if (Load(entry, report, (e, warnings) => (WhitelistEntries.Client(e, out string? problem, warnings), problem)) is { } list)
            {
                bool isNetwork = ClientWhitelist.Builder.TryParseNetwork(entry.Text, out IPAddress network, out int prefix);
                usable.Add((entry, list, isNetwork ? network : null, prefix));
            }
        }
        foreach (var (entry, _, network, prefix) in usable)
        {
            bool isRegex = IsRegex(entry.Text);
            foreach (var other in usable)
            {
                if (other.Entry == entry)
                {
                    break; // each pair once: the later entry is the one to look at
                }
                bool same = isRegex || IsRegex(other.Entry.Text)
                    ? string.Equals(entry.Text, other.Entry.Text, StringComparison.Ordinal)
                    : network is not null
                        ? other.Network is not null && other.Prefix == prefix && other.List.MatchesAddress(network)
                        : other.Network is null && string.Equals(entry.Text, other.Entry.Text, StringComparison.OrdinalIgnoreCase);
                if (same)
                {
                    report.Add((entry, false, $"{entry.Text}: duplicates {Where(other.Entry)}"));
                    break;
                }
            }
            if (isRegex)
            {
                continue;
            }
            foreach (var other in usable)
            {
                bool covers = network is not null
                    ? other.Network is not null && other.Prefix < prefix && other.List.MatchesAddress(network)
                    : other.Network is null && !IsRegex(other.Entry.Text) && !string.Equals(entry.Text, other.Entry.Text, StringComparison.OrdinalIgnoreCase)
                        && other.List.MatchesName(entry.Text);
                if (covers)
                {
                    report.Add((entry, false, $"{entry.Text}: already covered by {other.Entry.Text} ({Where(other.Entry)})"));
                    break;
                }
            }
        }
    }

    private static void CheckRecipients(List<WhitelistEntry> entries, List<(WhitelistEntry, bool, string)> report)
    {
        var usable = new List<(WhitelistEntry Entry, RecipientWhitelist List)>();
        foreach (WhitelistEntry entry in entries)
        {
            if (Load(entry, report, (e, warnings) => (WhitelistEntries.Recipient(e, out string? problem, warnings), problem)) is { } list)
            {
                usable.Add((entry, list));
            }
        }
        foreach (var (entry, _) in usable)
        {
            var duplicate = usable.TakeWhile(o => o.Entry != entry)
                .FirstOrDefault(o => string.Equals(o.Entry.Text, entry.Text, IsRegex(entry.Text) ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase));
            if (duplicate.Entry is not null)
            {
                report.Add((entry, false, $"{entry.Text}: duplicates {Where(duplicate.Entry)}"));
                continue;
            }
            if (IsRegex(entry.Text) || entry.Text.EndsWith('@'))
            {
                continue; // a regex, or user@ (any domain): only a duplicate stands for all it matches
            }
            // A domain entry matches the domain and its subdomains: only another domain entry
            // holds all of those. An address is covered by anything that matches it.
            bool isDomain = !entry.Text.Contains('@', StringComparison.Ordinal);
            string probe = isDomain ? "postmaster@" + entry.Text : entry.Text;
            var cover = usable.FirstOrDefault(o => o.Entry != entry && !IsRegex(o.Entry.Text)
                && (!isDomain || !o.Entry.Text.Contains('@', StringComparison.Ordinal))
                && !string.Equals(o.Entry.Text, entry.Text, StringComparison.OrdinalIgnoreCase)
                && o.List.Matches(probe));
            if (cover.Entry is not null)
            {
                report.Add((entry, false, $"{entry.Text}: already covered by {cover.Entry.Text} ({Where(cover.Entry)})"));
            }
        }
    }

    /// <summary>One entry loaded as the service would: its problem is an error, a regex the
    /// service runs with a timeout a warning, and one that times out an error.</summary>
    private static T? Load<T>(WhitelistEntry entry, List<(WhitelistEntry, bool, string)> report, Func<WhitelistEntry, List<WhitelistWarning>, (T? List, string? Problem)> load)
        where T : class
    {
        var warnings = new List<WhitelistWarning>();
        var (list, problem) = load(entry, warnings);
        if (problem is not null)
        {
            report.Add((entry, true, $"{entry.Text}: {problem}"));
            return null;
        }
        foreach (WhitelistWarning warning in warnings)
        {
            report.Add((entry, false, $"{entry.Text}: {warning.Message}"));
        }
        if (warnings.Count > 0 && WhitelistEntries.FindRegexTimeout(entry.Text) is { } probe)
        {
            report.Add((entry, true, $"{entry.Text}: the match times out on a {probe.Length}-character name (\"{probe[..8]}...\"); the service would count it as no match"));
        }
        return list;
    }

    private static bool IsRegex(string text) => text.Length >= 3 && text[0] == '/' && text[^1] == '/';

    private static string Where(WhitelistEntry entry) => $"{entry.Source}:{entry.Line}";
}
