using System.CommandLine;
using Postgrey.Configuration;
using Postgrey.Core.Greylisting;
using Postgrey.Hosting;
using Postgrey.Platform;

namespace Postgrey;

/// <summary>The command: a tool (import, export), help, version, or the service, started by
/// <see cref="ServiceStartup"/> with the options the flags give.</summary>
internal static class Program
{
    public static int Main(string[] args)
    {
        // First, before anything is loaded: a HUP or TERM sent while it starts is acted on.
        using var signals = new ProcessSignals();
        return Start(args, signals);
    }

    // Not inlined: Main must not make the JIT load System.CommandLine before the handlers exist.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static int Start(string[] args, ProcessSignals signals)
    {
        if (args.Length > 0 && Tools.ToolCommand.Find(args[0]) is { } tool)
        {
            return Tools.ToolCommand.Run(tool, args[1..]); // postgrey import|export ...
        }
        var commandLine = new PostgreyCommandLine();
        ParseResult parsed = commandLine.Parse(args);
        if (commandLine.WantsHelp(parsed))
        {
            return commandLine.WriteHelp(Console.Out);
        }
        if (parsed.GetValue(commandLine.Version))
        {
            Console.Out.WriteLine($"postgrey {VersionInfo.PostgreyCompatible} (Postgrey for .NET {VersionInfo.Product})");
            return 0;
        }
        // Every problem at once, before anything starts.
        IReadOnlyList<string> errors = commandLine.Errors(parsed);
        if (errors.Count > 0)
        {
            foreach (string error in errors)
            {
                Console.Error.WriteLine($"ERROR: {error}");
            }
            return 1;
        }
        return ServiceStartup.Run(OptionsMapper.Map(commandLine, parsed), args, signals);
    }
}
