using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp agent ...</c>: talks straight to the guest agent through a VM's hybrid vsock socket
/// (the <c>--vsock PATH</c> of <c>firesharp run</c>, or <c>v.sock</c> in a daemon VM's directory),
/// without the daemon. <c>exec</c> exits with the command's exit code (128+N for signal N); its own failures use
/// the table of <see cref="ExitCodes"/>: 1 when the command ran longer than <c>--timeout</c> (killed) or the agent
/// refused the request, 2 bad input, 3 when the agent cannot be reached. A command's own exit code can be any of
/// these too; the line <c>firesharp agent exec: ...</c> on stderr marks the agent's own failures.
/// </summary>
internal static class AgentCommands
{
    /// <summary>The command ran longer than --timeout (it was killed), or the agent did not answer in time.</summary>
    public const int ExitTimedOut = ExitCodes.Failed;

    /// <summary>The agent refused the request.</summary>
    public const int ExitAgentError = ExitCodes.Failed;

    /// <summary>The agent cannot be reached (no socket, no VM, the agent not running).</summary>
    public const int ExitAgentUnreachable = ExitCodes.Unreachable;

    /// <summary>How long connecting (the hybrid handshake and Hello) may take.</summary>
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    public static Command Create()
    {
        var vsock = new Option<string>("--vsock") { Description = "the VM's hybrid vsock Unix socket (firesharp run --vsock PATH)", Required = true, Recursive = true };
        var port = new Option<uint>("--port") { Description = "the agent's vsock port", Recursive = true, DefaultValueFactory = _ => AgentProtocol.DefaultPort };
        var agent = new Command("agent", "talk to the FireSharp guest agent of a running VM") { vsock, port };
        agent.Subcommands.Add(ExecCommand(vsock, port));
        agent.Subcommands.Add(PingCommand(vsock, port));
        return agent;
    }

    private static Command ExecCommand(Option<string> vsock, Option<uint> port)
    {
        var timeout = new Option<double?>("--timeout") { Description = "seconds the command may run; the agent kills it afterwards (exit 1)" };
        var stdin = new Option<bool>("--stdin", "-i") { Description = "send this process's standard input (read to its end first) to the command" };
        var env = new Option<string[]>("--env", "-e") { Description = "an environment variable NAME=VALUE for the command (repeatable)" };
        var argv = new Argument<string[]>("command") { Description = "the program and its arguments (after --)", Arity = ArgumentArity.OneOrMore };
        var command = new Command("exec", "run a command in the guest; prints its output and exits with the command's own exit code "
            + "(128+N for signal N; its own failures: 1 timed out or refused, 2 bad input, 3 agent unreachable)") { timeout, stdin, env, argv };
        command.SetAction(async (parse, ct) =>
        {
            double? seconds = parse.GetValue(timeout);
            if (seconds is { } s && (s <= 0 || s > 49 * 86400))
                return Fail(ExitCodes.Usage, $"--timeout {s.ToString(CultureInfo.InvariantCulture)}: must be positive (seconds)");
            var variables = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var e in parse.GetValue(env) ?? [])
            {
                int eq = e.IndexOf('=');
                if (eq <= 0) return Fail(ExitCodes.Usage, $"--env {e}: expected NAME=VALUE");
                variables[e[..eq]] = e[(eq + 1)..];
            }
            byte[] input = [];
            if (parse.GetValue(stdin))
            {
                using var ms = new MemoryStream();
                await using (var console = Console.OpenStandardInput()) await console.CopyToAsync(ms, ct);
                input = ms.ToArray();
            }
            await using var stdout = Console.OpenStandardOutput();
            await using var stderr = Console.OpenStandardError();
            return await ExecAsync(parse.GetValue(vsock)!, parse.GetValue(port), parse.GetValue(argv) ?? [],
                seconds is { } t ? TimeSpan.FromSeconds(t) : null, input, variables.Count > 0 ? variables : null,
                stdout, stderr, Console.Error, ct);
        });
        return command;
    }

    private static Command PingCommand(Option<string> vsock, Option<uint> port)
    {
        var command = new Command("ping", "check that the agent answers; prints its version, the guest kernel and uptime");
        command.SetAction((parse, ct) => PingAsync(parse.GetValue(vsock)!, parse.GetValue(port), Console.Out, Console.Error, ct));
        return command;
    }

    /// <summary>
    /// <c>agent exec</c>: runs <paramref name="argv"/> through the agent behind <paramref name="vsock"/>, copying
    /// its output to <paramref name="stdout"/>/<paramref name="stderr"/> as it arrives; returns the exit code to use.
    /// </summary>
    internal static async Task<int> ExecAsync(string vsock, uint port, IReadOnlyList<string> argv, TimeSpan? timeout,
        ReadOnlyMemory<byte> stdin, IReadOnlyDictionary<string, string>? env, Stream stdout, Stream stderr, TextWriter diagnostics,
        CancellationToken ct)
    {
        var command = new AgentCommand([.. argv])
        {
            Stdin = stdin,
            Timeout = timeout,
            Environment = env,
            MaxCapturedBytes = 0, // streamed, not kept
        };
        AgentClient? connected;
        try
        {
            connected = await ConnectAsync(vsock, port, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is AgentException or IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException
                                   || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            await diagnostics.WriteLineAsync($"firesharp agent exec: cannot reach the agent at {vsock} port {port}: {e.Message}").ConfigureAwait(false);
            return ExitAgentUnreachable;
        }
        try
        {
            await using var client = connected;
            // The agent enforces the timeout; the client gives up a little later should the guest not answer at all.
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (timeout is { } t) deadline.CancelAfter(t + TimeSpan.FromSeconds(10));
            var result = await client.ExecAsync(command, async (stream, chunk, token) =>
            {
                var target = stream == OutputStream.Stderr ? stderr : stdout;
                await target.WriteAsync(chunk, token).ConfigureAwait(false);
                await target.FlushAsync(token).ConfigureAwait(false);
            }, deadline.Token).ConfigureAwait(false);
            if (result.TimedOut)
            {
                await diagnostics.WriteLineAsync($"firesharp agent exec: {argv[0]} ran longer than {timeout?.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s and was killed").ConfigureAwait(false);
                return ExitTimedOut;
            }
            if (result.ExitCode is { } code) return code;
            await diagnostics.WriteLineAsync($"firesharp agent exec: {argv[0]} was killed by signal {result.Signal}{(result.CoreDumped ? " (core dumped)" : "")}").ConfigureAwait(false);
            return 128 + (result.Signal ?? 0);
        }
        catch (AgentException e)
        {
            await diagnostics.WriteLineAsync($"firesharp agent exec: {e.Message}").ConfigureAwait(false);
            return ExitAgentError;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            await diagnostics.WriteLineAsync($"firesharp agent exec: the agent did not answer within the timeout").ConfigureAwait(false);
            return ExitTimedOut;
        }
    }

    /// <summary><c>agent ping</c>: 0 when the agent answered, <see cref="ExitAgentUnreachable"/> otherwise.</summary>
    internal static async Task<int> PingAsync(string vsock, uint port, TextWriter output, TextWriter diagnostics, CancellationToken ct)
    {
        try
        {
            await using var client = await ConnectAsync(vsock, port, ct).ConfigureAwait(false);
            long start = Stopwatch.GetTimestamp();
            var pong = await client.PingAsync("firesharp"u8.ToArray(), ct).ConfigureAwait(false);
            var rtt = Stopwatch.GetElapsedTime(start);
            var info = client.Agent!;
            await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                $"agent {info.Version} (protocol {client.ProtocolVersion}) on {info.Hostname}, kernel {info.KernelRelease}, guest uptime {pong.UptimeUs / 1e6:F1} s, round trip {rtt.TotalMilliseconds:F2} ms")).ConfigureAwait(false);
            return 0;
        }
        catch (AgentException e)
        {
            await diagnostics.WriteLineAsync($"firesharp agent ping: {e.Message}").ConfigureAwait(false);
            return ExitAgentUnreachable;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            await diagnostics.WriteLineAsync("firesharp agent ping: the agent did not answer").ConfigureAwait(false);
            return ExitAgentUnreachable;
        }
    }

    private static async Task<AgentClient> ConnectAsync(string vsock, uint port, CancellationToken ct)
    {
        using var connect = CancellationTokenSource.CreateLinkedTokenSource(ct);
        connect.CancelAfter(ConnectTimeout);
        return await AgentClient.ConnectHybridVsockAsync(vsock, port, connect.Token).ConfigureAwait(false);
    }

    private static int Fail(int code, string message)
    {
        Console.Error.WriteLine("firesharp agent: " + message);
        return code;
    }
}
