using System.Collections.Concurrent;
using FireSharp.Agent.Guest;
using FireSharp.Agent.Processes;
using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Server;

/// <summary>State shared by every connection of one agent.</summary>
internal sealed class AgentContext
{
    public required IGuestSystem System { get; init; }
    public required ChildReaper Reaper { get; init; }
    public required GuestSetup Setup { get; init; }

    /// <summary>Filled at start-up; <see cref="CurrentInfo"/> adds the current hostname.</summary>
    public required AgentInfo Info { get; init; }

    /// <summary>The environment an Exec starts from (unless clear_env).</summary>
    public required IReadOnlyDictionary<string, string> BaseEnvironment { get; init; }

    /// <summary>Cancelled when the agent stops accepting connections.</summary>
    public CancellationTokenSource StopAccepting { get; } = new();

    /// <summary>Cancelled when the agent drops its connections (the last step of stopping).</summary>
    public CancellationTokenSource Stopping { get; } = new();

    /// <summary>Commands started by Exec that are still running, by pid.</summary>
    public ConcurrentDictionary<int, SpawnedProcess> Running { get; } = new();

    public int MaxConcurrentExecs { get; init; } = 64;

    private FireSharp.Agent.Functions.FunctionHost? _functions;

    /// <summary>The function (FunctionInit/Invoke/FunctionShutdown); made on first use.</summary>
    public FireSharp.Agent.Functions.FunctionHost Functions =>
        LazyInitializer.EnsureInitialized(ref _functions, () => new FireSharp.Agent.Functions.FunctionHost(Reaper));

    public AgentInfo CurrentInfo()
    {
        var info = Info.Clone();
        try { info.Hostname = Environment.MachineName; } catch (InvalidOperationException) { }
        return info;
    }

    /// <summary>Sends <paramref name="signal"/> to the process group of every running Exec.</summary>
    public void ForwardSignal(int signal)
    {
        foreach (var p in Running.Values)
            if (!p.Exited.IsCompleted) p.KillGroup(signal);
    }

    /// <summary>
    /// SIGTERM (or <paramref name="signal"/>) to every running Exec, SIGKILL to those still running
    /// after <paramref name="grace"/>. Returns when their Exec requests have finished (exit
    /// reported), or after a few more seconds.
    /// </summary>
    public async Task StopCommandsAsync(TimeSpan grace, int signal = 15)
    {
        ForwardSignal(signal);
        if (await CommandsFinishedAsync(grace).ConfigureAwait(false)) return;
        ForwardSignal(Tmds.Linux.LibC.SIGKILL);
        await CommandsFinishedAsync(TimeSpan.FromSeconds(3)).ConfigureAwait(false);
    }

    private async Task<bool> CommandsFinishedAsync(TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (!Running.IsEmpty && DateTime.UtcNow < deadline) await Task.Delay(10).ConfigureAwait(false);
        return Running.IsEmpty;
    }

    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _stopping;

    /// <summary>Completes when a stop or a shutdown has run to its end (the main loop waits for it).</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>
    /// Stops in order (SIGTERM/SIGINT when not PID 1): no new connections, the commands get the
    /// signal (then SIGKILL after a second), their results are sent, then the connections close.
    /// </summary>
    public async Task StopAsync(int signal)
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0) return;
        try
        {
            StopAccepting.Cancel();
            await StopCommandsAsync(TimeSpan.FromSeconds(1), signal).ConfigureAwait(false);
            if (_functions is not null) await _functions.StopAllAsync().ConfigureAwait(false);
            Stopping.Cancel();
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    /// <summary>
    /// Shutdown: stop serving, stop the commands, sync, unmount the extra drives, power off.
    /// Returns only if powering off failed (or the fake system did not exit).
    /// </summary>
    public async Task ShutdownAsync(ShutdownMode mode)
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0) return;
        try
        {
            Log.Info($"shutdown ({mode})");
            StopAccepting.Cancel();
            await StopCommandsAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            if (_functions is not null) await _functions.StopAllAsync().ConfigureAwait(false);
            Stopping.Cancel();
            Setup.UnmountExtraDrives();
            System.PowerOff(mode);
        }
        catch (IOException e)
        {
            Log.Error(e.Message);
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }
}
