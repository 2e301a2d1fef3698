using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// The VMs' vsock devices and guest agents: readiness, Exec and a graceful stop. The worker creates the hybrid
/// vsock socket at <c>&lt;vm dir&gt;/v.sock</c>; the daemon listens at <c>v.sock_53</c> for the agent's ready
/// report (a booted VM) or probes the agent until it answers (a restored one), and talks to the agent through
/// <c>v.sock</c> (CONNECT 52).
/// </summary>
internal sealed class GuestAgents(DaemonOptions options, VmRegistry registry, EventHub events, ILogger logger)
{
    /// <summary>The hybrid vsock socket's file name in the VM's directory (short: the path must fit in 108 bytes with "_53").</summary>
    public const string VsockFileName = "v.sock";

    /// <summary>Each stream of an Exec reply is kept up to this many bytes (gRPC's default message limit is 4 MiB).</summary>
    public const int MaxExecCapture = 1 << 20;

    private static readonly TimeSpan AgentShutdownTimeout = TimeSpan.FromSeconds(5);

    /// <summary>How long a restored VM's agent is probed for before the daemon gives up (it stays not agent_ready).</summary>
    private static readonly TimeSpan RestoredAgentProbeTime = TimeSpan.FromMinutes(2);

    /// <summary>The VM's hybrid vsock socket on the daemon's host (the daemon's own choice).</summary>
    public string VsockPath(string id) => Path.Combine(options.RunDir(id), VsockFileName);

    /// <summary>
    /// The VM's hybrid vsock socket: a restored VM's override (RestoreVm's, or the daemon's default
    /// <see cref="VsockPath"/> that the restore records), else <see cref="VsockPath"/>.
    /// </summary>
    public string AgentVsockPath(VmEntry entry) =>
        entry.RestoredFrom?.VsockPath is { Length: > 0 } path ? path : VsockPath(entry.Id);

    /// <summary>
    /// Before a create with a vsock device (or the agent, which implies one): removes a previous run's socket
    /// files and, with the agent, listens for its ready report until the session ends. Returns the socket path.
    /// </summary>
    public string PrepareVsock(VmEntry entry, WorkerSession session, bool agent)
    {
        string uds = VsockPath(entry.Id);
        string readyPath = HybridVsock.GuestInitiatedPath(uds, AgentProtocol.DefaultReadyPort);
        TryDelete(uds); // the worker creates it and it must not exist
        TryDelete(readyPath);
        if (!agent) return uds;

        AgentReadyListener listener;
        try
        {
            listener = AgentReadyListener.Bind(readyPath);
        }
        catch (AgentException e)
        {
            throw VmApiException.Unavailable($"cannot listen for the guest agent: {e.Message}");
        }
        lock (entry.Gate) session.ReadyListener = listener;
        // A jailed worker connects to it with the VM's uid.
        if (entry.Worker is { Jailed: true } && entry.Jail is { } jail) FireSharp.Kvm.Interop.Mounts.ChangeOwner(readyPath, jail.Uid, jail.Gid);
        _ = Task.Run(async () =>
        {
            try
            {
                var ready = await listener.WaitAsync(session.Cts.Token).ConfigureAwait(false);
                MarkReady(entry, session, $"guest agent {ready.Agent?.Version} ready");
                VmLog.AgentReady(logger, entry.Id);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or System.Net.Sockets.SocketException) { }
        });
        return uds;
    }

    /// <summary>Before a restore into a new worker: a socket file left by an earlier worker of this VM at the daemon's own path goes.</summary>
    public void PrepareRestoredVsock(VmEntry entry)
    {
        string uds = AgentVsockPath(entry);
        if (uds == VsockPath(entry.Id)) TryDelete(uds);
    }

    /// <summary>When a session ends: stops listening for the agent and removes the vsock socket file.</summary>
    public static void Release(VmEntry entry, WorkerSession session)
    {
        AgentReadyListener? listener;
        lock (entry.Gate)
        {
            listener = session.ReadyListener;
            session.ReadyListener = null;
        }
        listener?.Dispose();
        TryDelete(Path.Combine(Path.GetDirectoryName(session.Process.SocketPath)!, VsockFileName));
    }

    /// <summary>
    /// After a restore: the snapshotted guest's agent reported ready long ago and will not again; it keeps
    /// listening on port 52, and the transport reset dropped only connections. Connect (Hello) until it
    /// answers, give the guest fresh entropy, then mark the VM agent_ready, as the ready report does for a
    /// booted VM. Only time spent RUNNING counts: a VM restored paused is probed once it is resumed.
    /// </summary>
    public void ProbeRestoredAgent(VmEntry entry, WorkerSession session)
    {
        var spec = entry.Snapshot().Spec;
        if (spec.Vsock is null || !spec.Agent) return;
        string uds = AgentVsockPath(entry);
        _ = Task.Run(async () =>
        {
            var probing = TimeSpan.Zero;
            var delay = TimeSpan.FromMilliseconds(20);
            while (probing < RestoredAgentProbeTime && !session.Cts.IsCancellationRequested)
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                bool running = entry.Snapshot().Phase == VmPhase.Running;
                try
                {
                    if (running)
                    {
                        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(session.Cts.Token);
                        attempt.CancelAfter(TimeSpan.FromSeconds(10));
                        await using var client = await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: attempt.Token).ConfigureAwait(false);
                        await ReseedAsync(entry.Id, client, attempt.Token).ConfigureAwait(false);
                        MarkReady(entry, session, $"guest agent {client.Agent?.Version} answers after the restore");
                        return;
                    }
                }
                catch (Exception e) when (e is AgentException or OperationCanceledException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
                {
                    if (session.Cts.IsCancellationRequested) return;
                }
                try
                {
                    await Task.Delay(delay, session.Cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { return; }
                if (running) probing += System.Diagnostics.Stopwatch.GetElapsedTime(started);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            }
        });
    }

    /// <summary>Runs a command in a running VM through its guest agent.</summary>
    public async Task<ExecOutcome> ExecAsync(VmEntry entry, ExecCommand command, CancellationToken ct)
    {
        string uds = ReadyAgentPath(entry);
        var agentCommand = new AgentCommand([.. command.Argv])
        {
            Environment = command.Env.Count > 0 ? command.Env : null,
            Stdin = command.Stdin,
            Timeout = command.TimeoutSeconds > 0 ? TimeSpan.FromSeconds(command.TimeoutSeconds) : null,
            MaxCapturedBytes = MaxExecCapture,
        };
        try
        {
            await using var client = await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: ct).ConfigureAwait(false);
            var result = await client.ExecAsync(agentCommand, ct).ConfigureAwait(false);
            return new ExecOutcome(result.ExitCode ?? 128 + (result.Signal ?? 0), result.Stdout, result.Stderr);
        }
        catch (AgentException e) when (e.Failure == AgentFailure.Remote
            && e.Code is Proto.Agent.ErrorCode.ExecFailed or Proto.Agent.ErrorCode.InvalidArgument or Proto.Agent.ErrorCode.NotFound or Proto.Agent.ErrorCode.PermissionDenied)
        {
            // The command cannot run (not found, not executable, a bad argument): the caller's to fix.
            throw VmApiException.Invalid("argv", e.Message);
        }
        catch (AgentException e) when (e.Failure == AgentFailure.Remote && e.Code == Proto.Agent.ErrorCode.ResourceExhausted)
        {
            throw VmApiException.Exhausted(null, $"the guest agent of VM '{entry.Id}': {e.Message}");
        }
        catch (AgentException e)
        {
            throw VmApiException.Unavailable($"the guest agent of VM '{entry.Id}': {e.Message}");
        }
    }

    /// <summary>
    /// The socket of a RUNNING VM's guest agent that has reported ready; FAILED_PRECONDITION ("agent not available")
    /// when the VM has no agent, is not running, or its agent is not ready yet.
    /// </summary>
    public string ReadyAgentPath(VmEntry entry)
    {
        var vm = entry.Snapshot();
        if (!vm.Spec.Agent)
            throw VmApiException.WrongState($"agent not available: VM '{entry.Id}' was created without the guest agent (spec.agent)");
        if (vm.Phase != VmPhase.Running)
            throw VmApiException.WrongState($"agent not available: VM '{entry.Id}' is {VmEntry.Describe(vm.Phase)}");
        if (!vm.AgentReady)
            throw VmApiException.WrongState($"agent not available: the guest agent of VM '{entry.Id}' has not reported ready yet");
        return AgentVsockPath(entry);
    }

    /// <summary>
    /// The graceful part of a stop when the agent is ready: ask it to power off, then wait up to
    /// <paramref name="grace"/> for the VM to end. False when the agent is not there or the guest
    /// did not end (the caller then goes on with the worker's Ctrl-Alt-Del and force).
    /// </summary>
    public async Task<bool> TryShutdownAsync(VmEntry entry, TimeSpan grace, CancellationToken ct)
    {
        if (!entry.Snapshot().AgentReady) return false;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(AgentShutdownTimeout < grace ? AgentShutdownTimeout : grace);
            await using var client = await AgentClient.ConnectHybridVsockAsync(AgentVsockPath(entry), cancellationToken: timeout.Token).ConfigureAwait(false);
            // Reboot: with reboot=k an i8042 reset, the clean end of a VM here (power-off only halts without ACPI).
            await client.ShutdownAsync(Proto.Agent.ShutdownMode.Reboot, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is AgentException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            VmLog.AgentShutdownFailed(logger, entry.Id, e.Message);
            return false;
        }
        var until = DateTime.UtcNow + grace;
        while (DateTime.UtcNow < until)
        {
            if (entry.Snapshot().Phase is VmPhase.Stopped or VmPhase.Failed) return true;
            await Task.Delay(50, ct).ConfigureAwait(false);
        }
        return false;
    }

    /// <summary>The agent answered: the VM is agent_ready (unless its session is over).</summary>
    private void MarkReady(VmEntry entry, WorkerSession session, string message)
    {
        lock (entry.Gate)
        {
            if (entry.Session != session || entry.Deleted) return;
            entry.Vm = entry.Vm with { AgentReady = true };
            events.Publish(entry.Event(VmEventKind.AgentReady, message));
        }
        registry.Save(entry);
    }

    /// <summary>
    /// Clones of one snapshot share the guest kernel's RNG state: give this one fresh entropy from the host
    /// (the agent adds it and reseeds the CRNG). An agent without the request is logged and left as it is.
    /// </summary>
    private async Task ReseedAsync(string id, AgentClient client, CancellationToken ct)
    {
        try
        {
            bool reseeded = await client.ReseedAsync(cancellationToken: ct).ConfigureAwait(false);
            if (!reseeded) VmLog.NotReseeded(logger, id);
        }
        catch (AgentException e) when (e.Failure == AgentFailure.Remote)
        {
            VmLog.ReseedRefused(logger, id, e.Message);
        }
    }

    internal static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
