using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace FireSharp.Cli;

/// <summary>
/// The firesharp command line: one binary for the foreground runner, the daemon and its clients. Parse errors are
/// one line and a hint (exit 2, <see cref="ExitCodes"/>), never the whole help; every help ends with the exit-code
/// table.
/// </summary>
public static class CliApp
{
    public static RootCommand CreateRoot() => new("FireSharp: KVM microVMs")
    {
        RunCommand.Create(),
        ServeCommand.Create(),
        VmClientCommands.Create(),
        SnapshotCommands.Create(),
        AgentCommands.Create(),
        FunctionCommands.Create(),
        CompletionCommand.Create(),
        ConfigCommands.Create(),
    };

    public static int Run(string[] args)
    {
        var parse = CreateRoot().Parse(args);
        if (parse.Action is ParseErrorAction && parse.Errors.Count > 0)
        {
            string path = Output.Printer.CommandPathOf(parse);
            foreach (var e in parse.Errors.Skip(1).Take(2)) Console.Error.WriteLine($"firesharp: error: {e.Message}");
            return CliErrors.Report(Console.Error, ExitCodes.Usage, parse.Errors[0].Message, $"see '{path} --help'");
        }
        try
        {
            int code = parse.Invoke();
            if (parse.Action is HelpAction) Console.Out.WriteLine(ExitCodes.Table);
            return code;
        }
        catch (CliException e)
        {
            return CliErrors.Report(Console.Error, e);
        }
    }
}
