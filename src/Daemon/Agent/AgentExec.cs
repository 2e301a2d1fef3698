using System.Text;
using FireSharp.Proto.Agent;

namespace FireSharp.Daemon.Agent;

/// <summary>A command for <see cref="AgentClient.ExecAsync(AgentCommand, CancellationToken)"/>.</summary>
public sealed record AgentCommand
{
    public AgentCommand(params string[] argv) => Argv = argv;

    /// <summary>argv[0] is looked up in the guest's PATH unless it contains '/'.</summary>
    public IReadOnlyList<string> Argv { get; init; }
    /// <summary>Added to (or, with <see cref="ClearEnvironment"/>, replacing) the agent's environment.</summary>
    public IReadOnlyDictionary<string, string>? Environment { get; init; }
    public bool ClearEnvironment { get; init; }
    /// <summary>Working directory in the guest; null = the agent's (/).</summary>
    public string? WorkingDirectory { get; init; }
    /// <summary>Written to stdin, which is then closed.</summary>
    public ReadOnlyMemory<byte> Stdin { get; init; }
    /// <summary>The agent kills the command (SIGKILL to its process group) after this long.</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary>How much of each of stdout and stderr the result keeps (the rest is counted, not kept).</summary>
    public int MaxCapturedBytes { get; init; } = 1 << 20;

    internal ExecRequest ToRequest()
    {
        var request = new ExecRequest
        {
            ClearEnv = ClearEnvironment,
            Cwd = WorkingDirectory ?? "",
            Stdin = Google.Protobuf.ByteString.CopyFrom(Stdin.Span),
        };
        request.Argv.AddRange(Argv);
        if (Environment is not null) request.Env.Add(Environment.ToDictionary(kv => kv.Key, kv => kv.Value));
        if (Timeout is { } t)
        {
            if (t <= TimeSpan.Zero || t.TotalMilliseconds > uint.MaxValue) throw new ArgumentOutOfRangeException(nameof(Timeout), t, "must be positive and at most 49 days");
            request.TimeoutMs = (uint)Math.Max(1, Math.Ceiling(t.TotalMilliseconds));
        }
        return request;
    }
}

/// <summary>How a command ended, with (up to a bound) what it printed.</summary>
public sealed record AgentExecResult
{
    public int Pid { get; init; }
    /// <summary>The exit code, or null when a signal killed it.</summary>
    public int? ExitCode { get; init; }
    /// <summary>The signal that killed it, or null when it exited.</summary>
    public int? Signal { get; init; }
    /// <summary>The agent killed it because the timeout passed.</summary>
    public bool TimedOut { get; init; }
    public bool CoreDumped { get; init; }
    public byte[] Stdout { get; init; } = [];
    public byte[] Stderr { get; init; } = [];
    /// <summary>Everything the command wrote to stdout (at most <see cref="AgentCommand.MaxCapturedBytes"/> are in <see cref="Stdout"/>).</summary>
    public long StdoutBytes { get; init; }
    public long StderrBytes { get; init; }
    public bool StdoutTruncated => StdoutBytes > Stdout.Length;
    public bool StderrTruncated => StderrBytes > Stderr.Length;
    /// <summary>From start to exit, as the agent measured it.</summary>
    public TimeSpan Duration { get; init; }

    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string StderrText => Encoding.UTF8.GetString(Stderr);

    public override string ToString() =>
        (ExitCode is { } c ? $"exit {c}" : $"signal {Signal}") + (TimedOut ? " (timed out)" : "");
}

/// <summary>Receives a command's output as it arrives; the chunk is only valid during the call.</summary>
public delegate ValueTask AgentOutputHandler(OutputStream stream, ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken);
