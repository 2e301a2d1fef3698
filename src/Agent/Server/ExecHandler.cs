using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using FireSharp.Agent.Processes;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Tmds.Linux;

namespace FireSharp.Agent.Server;

/// <summary>
/// Exec: start the command, write its stdin, stream stdout/stderr back as they come (memory use
/// stays at one chunk per stream: the client's reading paces the command), enforce the timeout,
/// and end with ExecExit. A client that leaves kills the command's process group.
/// </summary>
internal static class ExecHandler
{
    private const int ChunkBytes = 32 << 10;
    // After the command exits, how long output may still drain (a background child can hold the
    // pipes open forever).
    private static readonly TimeSpan DrainGrace = TimeSpan.FromSeconds(1);

    public static async Task RunAsync(AgentConnection connection, ulong id, ExecRequest request)
    {
        var context = connection.Context;
        if (request.Argv.Count == 0)
        {
            await connection.SendErrorAsync(id, ErrorCode.InvalidArgument, "argv is empty").ConfigureAwait(false);
            return;
        }
        if (request.Env.Keys.FirstOrDefault(k => k.Length == 0 || k.Contains('=')) is { } badKey)
        {
            await connection.SendErrorAsync(id, ErrorCode.InvalidArgument, $"environment variable name '{badKey}' is empty or contains '='").ConfigureAwait(false);
            return;
        }
        if (context.Running.Count >= context.MaxConcurrentExecs)
        {
            await connection.SendErrorAsync(id, ErrorCode.ResourceExhausted, $"{context.MaxConcurrentExecs} commands are running already").ConfigureAwait(false);
            return;
        }

        var env = new Dictionary<string, string>(request.ClearEnv ? [] : context.BaseEnvironment, StringComparer.Ordinal);
        foreach (var (k, v) in request.Env) env[k] = v;
        var envList = env.Select(kv => $"{kv.Key}={kv.Value}").ToArray();

        SpawnedProcess process;
        long started = Stopwatch.GetTimestamp();
        try
        {
            process = ProcessSpawner.Spawn(context.Reaper, request.Argv, envList, request.Cwd.Length == 0 ? null : request.Cwd);
        }
        catch (SpawnException e)
        {
            await connection.SendErrorAsync(id, ErrorCode.ExecFailed, e.Message).ConfigureAwait(false);
            return;
        }

        using (process)
        {
            context.Running[process.Pid] = process;
            try
            {
                Log.Debug($"exec {process.Pid}: {string.Join(' ', request.Argv)}");
                await connection.SendAsync(new Response { Id = id, ExecStarted = new ExecStarted { Pid = process.Pid } }).ConfigureAwait(false);

                bool timedOut = false;
                void Kill()
                {
                    if (!process.Exited.IsCompleted) process.KillGroup(LibC.SIGKILL);
                }
                using var timer = request.TimeoutMs > 0 ? new CancellationTokenSource(TimeSpan.FromMilliseconds(request.TimeoutMs)) : null;
                using var onTimeout = timer?.Token.Register(() => { timedOut = !process.Exited.IsCompleted; Kill(); });
                using var onGone = connection.ClientGone.Register(Kill);

                var stdin = WriteStdinAsync(process.Stdin, request.Stdin.Memory, connection.ClientGone);
                var stdout = PumpAsync(connection, id, process.Stdout, OutputStream.Stdout);
                var stderr = PumpAsync(connection, id, process.Stderr, OutputStream.Stderr);

                var status = await process.Exited.ConfigureAwait(false);
                var pumps = Task.WhenAll(stdout, stderr);
                await Task.WhenAny(pumps, Task.Delay(DrainGrace)).ConfigureAwait(false);
                process.Dispose(); // ends pumps still waiting on a background child's output
                await stdin.ConfigureAwait(false);
                await pumps.ConfigureAwait(false);

                Log.Debug($"exec {process.Pid}: {status}{(timedOut ? " (timed out)" : "")}");
                if (connection.ClientGone.IsCancellationRequested) return;
                var exit = new ExecExit
                {
                    TimedOut = timedOut,
                    CoreDumped = status.CoreDumped,
                    StdoutBytes = (ulong)stdout.Result,
                    StderrBytes = (ulong)stderr.Result,
                    DurationUs = (ulong)Stopwatch.GetElapsedTime(started).Ticks / 10,
                };
                if (status.ExitCode is { } code) exit.ExitCode = code;
                else exit.Signal = status.Signal ?? 0;
                await connection.SendAsync(new Response { Id = id, ExecExit = exit }).ConfigureAwait(false);
            }
            finally
            {
                context.Running.TryRemove(process.Pid, out _);
            }
        }
    }

    private static async Task WriteStdinAsync(Socket stdin, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            while (!data.IsEmpty)
            {
                int n = await stdin.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                data = data[n..];
            }
            stdin.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The command exited without reading all of it: that is its business.
        }
    }

    /// <summary>Forwards one output stream; returns the bytes it read.</summary>
    private static async Task<long> PumpAsync(AgentConnection connection, ulong id, Socket source, OutputStream stream)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        long total = 0;
        bool forwarding = true;
        try
        {
            while (true)
            {
                int n = await source.ReceiveAsync(buffer.AsMemory(0, Math.Min(ChunkBytes, AgentProtocol.MaxOutputChunkBytes)), SocketFlags.None, connection.ClientGone).ConfigureAwait(false);
                if (n <= 0) break;
                total += n;
                if (forwarding)
                {
                    forwarding = await connection.SendAsync(new Response
                    {
                        Id = id,
                        ExecOutput = new ExecOutput { Stream = stream, Data = AgentConnection.Wrap(buffer.AsMemory(0, n)) },
                    }).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return total;
    }
}
