using FireSharp.Agent.Transport;

namespace FireSharp.Agent;

/// <summary>The agent's own command line (the guest's kernel command line is separate).</summary>
internal sealed record AgentOptions
{
    public const string Usage = """
        usage: firesharp-agent [options]
          --listen EP        where to serve: vsock:PORT (default vsock:52, or firesharp.agent.port=)
                             or unix:PATH (host tests)
          --ready EP|none    where to report readiness: vsock:CID:PORT (default vsock:2:53, or
                             firesharp.agent.ready=), unix:PATH, or none
          --fake-system      host tests: no mounts, hostname or network; shutdown ends the process
          --cmdline-file F   read the firesharp.* keys from F (default /proc/cmdline; none with
                             --fake-system)
          --verbose          log every connection and command
          --version
        As PID 1 (rdinit=/usr/bin/firesharp-agent) it also mounts proc, sys, dev, tmp and run,
        reaps orphans and forwards SIGTERM/SIGINT to the commands it runs.
        """;

    public AgentEndpoint? Listen { get; init; }
    /// <summary>Null: from the kernel command line. <see cref="NoReady"/>: do not report.</summary>
    public AgentEndpoint? Ready { get; init; }
    public bool NoReady { get; init; }
    public bool FakeSystem { get; init; }
    public string? CmdlineFile { get; init; }
    public bool Verbose { get; init; }
    public bool ShowVersion { get; init; }
    public bool ShowHelp { get; init; }

    public static AgentOptions Parse(IReadOnlyList<string> args, out string? error)
    {
        var options = new AgentOptions();
        error = null;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string? Value()
            {
                if (i + 1 < args.Count) return args[++i];
                return null;
            }
            switch (arg)
            {
                case "--listen" or "--ready":
                    var text = Value();
                    if (text is null) { error = $"{arg} needs a value"; return options; }
                    if (arg == "--ready" && text == "none") { options = options with { NoReady = true }; break; }
                    if (!AgentEndpoint.TryParse(text, out var ep, out error)) { error = $"{arg}: {error}"; return options; }
                    options = arg == "--listen" ? options with { Listen = ep } : options with { Ready = ep };
                    break;
                case "--fake-system":
                    options = options with { FakeSystem = true };
                    break;
                case "--cmdline-file":
                    var file = Value();
                    if (file is null) { error = "--cmdline-file needs a value"; return options; }
                    options = options with { CmdlineFile = file };
                    break;
                case "--verbose" or "-v":
                    options = options with { Verbose = true };
                    break;
                case "--version":
                    options = options with { ShowVersion = true };
                    break;
                case "--help" or "-h":
                    options = options with { ShowHelp = true };
                    break;
                default:
                    // The kernel passes unknown name=value words of its command line to init as
                    // environment and other words as arguments: ignore them when PID 1.
                    if (Environment.ProcessId == 1) break;
                    error = $"unknown argument '{arg}'";
                    return options;
            }
        }
        return options;
    }
}
