using System.CommandLine;
using System.CommandLine.Help;

namespace Postgrey.Tools;

/// <summary>
/// Runs a subcommand (<c>postgrey import</c>, <c>export</c>, <c>db init</c>, <c>db copy</c>) as a tool, not a service:
/// its own --help, bad usage exits 2 and a failure exits 1, each with one line on stderr.
/// </summary>
internal static class ToolCommand
{
    public const int Usage = 2;
    public const int Failure = 1;

    /// <summary>The subcommands, by name, for <c>postgrey NAME ...</c>.</summary>
    public static Command? Find(string name) => name switch
    {
        "import" => ImportCommand.Create(),
        "export" => ExportCommand.Create(),
        "db" => DbCommand.Create(),
        "list" => ListCommand.Create(),
        "explain" => ExplainCommand.Create(),
        "check-whitelists" => CheckWhitelistsCommand.Create(),
        "report" => ReportCommand.Create(),
        "replay" => ReplayCommand.Create(),
        "stats" => StatsCommand.Create(),
        _ => null,
    };

    /// <summary>Parses <paramref name="args"/> (without the subcommand's name) and runs the command's action.</summary>
    public static int Run(Command command, IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(command);
        AddHelp(command);
        if (command.Name is "explain" or "check-whitelists")
        {
            // They take the service's flags, as /etc/default/postgrey may spell them (-inet 10023).
            args = Configuration.PostgreyCommandLine.AsGetoptReadsThem(command.Options, args);
        }
        ParseResult parsed = command.Parse(args);
        if (parsed.Action is HelpAction)
        {
            return parsed.Invoke();
        }
        if (parsed.Errors.Count > 0)
        {
            string name = Name(parsed.CommandResult); // "db copy" for a subcommand's error
            // One line, even for System.CommandLine's lists of allowed values.
            string message = string.Join(' ', parsed.Errors[0].Message.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Console.Error.WriteLine($"postgrey {name}: {message.TrimEnd('.')} (see postgrey {name} --help)");
            return Usage;
        }
        return parsed.Invoke();
    }

    /// <summary>A RootCommand brings its own help option; a lone Command and its subcommands do not.</summary>
    private static void AddHelp(Command command)
    {
        if (!command.Options.OfType<HelpOption>().Any())
        {
            command.Options.Add(new HelpOption());
        }
        foreach (Command sub in command.Subcommands)
        {
            AddHelp(sub);
        }
    }

    private static string Name(System.CommandLine.Parsing.CommandResult result) =>
        result.Parent is System.CommandLine.Parsing.CommandResult parent ? Name(parent) + " " + result.Command.Name : result.Command.Name;

    /// <summary>The one line bad usage found after parsing prints.</summary>
    public static int UsageError(string command, string message)
    {
        Console.Error.WriteLine($"postgrey {command}: {message} (see postgrey {command} --help)");
        return Usage;
    }

    /// <summary>The one line a failure prints.</summary>
    public static int Fail(string command, string message)
    {
        Console.Error.WriteLine($"postgrey {command}: ERROR: {message}");
        return Failure;
    }
}
