using System.CommandLine;

namespace FireSharp.Cli;

/// <summary>The firesharp command line: one binary for the foreground runner (and, later, daemon and client).</summary>
public static class CliApp
{
    public static int Run(string[] args)
    {
        var root = new RootCommand("FireSharp: KVM microVMs")
        {
            RunCommand.Create(),
            ServeCommand.Create(),
            VmClientCommands.Create(),
            SnapshotCommands.Create(),
            AgentCommands.Create(),
            FunctionCommands.Create(),
            ConfigCommands.Create(),
        };
        return root.Parse(args).Invoke();
    }
}
