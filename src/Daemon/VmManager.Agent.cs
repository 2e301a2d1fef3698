using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using Google.Protobuf;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon;

/// <summary>
/// The VM's vsock device and guest agent. The worker creates the hybrid vsock socket at
/// <c>&lt;vm dir&gt;/v.sock</c>; the daemon itself listens at <c>v.sock_53</c> for the agent's ready
/// report and talks to the agent through <c>v.sock</c> (CONNECT 52) for Exec and a graceful stop.
/// </summary>
public sealed partial class VmManager
{
    /// <summary>The hybrid vsock socket's file name in the VM's directory (short: the path must fit in 108 bytes with "_53").</summary>
    public const string VsockFileName = "v.sock";

    private static readonly TimeSpan AgentShutdownTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The VM's hybrid vsock socket on the daemon's host.</summary>
    public string VsockPath(string id) => Path.Combine(_options.VmDir(id), VsockFileName);

    /// <summary>Before the create: adds the vsock device to the machine (agent implies vsock, CID 3 by default) and listens for the agent.</summary>
    private void PrepareVsock(VmEntry entry, WorkerSession session, VmSpec spec, CreateMachine machine)
    {
        if (spec.Vsock is null && !spec.Agent) return;
        string uds = Path.Combine(entry.Dir, VsockFileName);
        TryDelete(uds); // a previous run's (the worker creates it and it must not exist)
        TryDelete(HybridVsock.GuestInitiatedPath(uds, AgentProtocol.DefaultReadyPort));
        machine.VsockPath = uds;
        machine.VsockCid = spec.Vsock?.GuestCid ?? 3;
        if (!spec.Agent) return;

        AgentReadyListener listener;
        try
        {
            listener = AgentReadyListener.Bind(HybridVsock.GuestInitiatedPath(uds, AgentProtocol.DefaultReadyPort));
        }
        catch (AgentException e)
        {
            throw VmApiException.Unavailable($"cannot listen for the guest agent: {e.Message}");
        }
        lock (entry.Gate) session.ReadyListener = listener;
        _ = Task.Run(async () =>
        {
            try
            {
                var ready = await listener.WaitAsync(session.Cts.Token).ConfigureAwait(false);
                lock (entry.Gate)
                {
                    if (entry.Session != session || entry.Deleted) return;
                    entry.Record.Vm.AgentReady = true;
                    Persist(entry);
                    Events.Publish(Event(EventType.AgentReady, entry, $"guest agent {ready.Agent?.Version} ready"));
                }
                AgentLog.Ready(_logger, entry.Id);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or System.Net.Sockets.SocketException) { }
        });
    }

    /// <summary>When a session ends: stops listening for the agent and removes the vsock socket files.</summary>
    private static void ReleaseVsock(VmEntry entry, WorkerSession session)
    {
        AgentReadyListener? listener;
        lock (entry.Gate)
        {
            listener = session.ReadyListener;
            session.ReadyListener = null;
        }
        listener?.Dispose();
        string uds = Path.Combine(entry.Dir, VsockFileName);
        TryDelete(uds);
    }

    /// <summary>Runs a command in the VM through its guest agent.</summary>
    public async Task<ExecResponse> ExecAsync(ExecRequest request, CancellationToken ct)
    {
        SpecValidator.ValidateId(request.Id);
        if (request.Argv.Count == 0 || request.Argv[0].Length == 0) throw VmApiException.Invalid("argv", "argv[0] (the program) is required");
        if (request.TimeoutSeconds < 0) throw VmApiException.Invalid("timeout_seconds", $"is {request.TimeoutSeconds}; must not be negative");
        var entry = Find(request.Id);
        lock (entry.Gate)
        {
            var vm = entry.Record.Vm;
            if (!vm.Spec.Agent)
                throw VmApiException.WrongState($"agent not available: VM '{request.Id}' was created without the guest agent (spec.agent)");
            if (vm.State != VmState.Running)
                throw VmApiException.WrongState($"agent not available: VM '{request.Id}' is {Describe(vm.State)}");
            if (!vm.AgentReady)
                throw VmApiException.WrongState($"agent not available: the guest agent of VM '{request.Id}' has not reported ready yet");
        }
        var command = new AgentCommand([.. request.Argv])
        {
            Environment = request.Env.Count > 0 ? new Dictionary<string, string>(request.Env) : null,
            Stdin = request.Stdin.Memory,
            Timeout = request.TimeoutSeconds > 0 ? TimeSpan.FromSeconds(request.TimeoutSeconds) : null,
            MaxCapturedBytes = MaxExecCapture,
        };
        try
        {
            await using var client = await AgentClient.ConnectHybridVsockAsync(AgentVsockPath(entry), cancellationToken: ct).ConfigureAwait(false);
            var result = await client.ExecAsync(command, ct).ConfigureAwait(false);
            return new ExecResponse
            {
                ExitCode = result.ExitCode ?? 128 + (result.Signal ?? 0),
                Stdout = ByteString.CopyFrom(result.Stdout),
                Stderr = ByteString.CopyFrom(result.Stderr),
            };
        }
        catch (AgentException e) when (e.Failure == AgentFailure.Remote
            && e.Code is Proto.Agent.ErrorCode.ExecFailed or Proto.Agent.ErrorCode.InvalidArgument or Proto.Agent.ErrorCode.NotFound or Proto.Agent.ErrorCode.PermissionDenied)
        {
            // The command cannot run (not found, not executable, a bad argument): the caller's to fix.
            throw VmApiException.Invalid("argv", e.Message);
        }
        catch (AgentException e) when (e.Failure == AgentFailure.Remote && e.Code == Proto.Agent.ErrorCode.ResourceExhausted)
        {
            throw VmApiException.Exhausted(null, $"the guest agent of VM '{request.Id}': {e.Message}");
        }
        catch (AgentException e)
        {
            throw VmApiException.Unavailable($"the guest agent of VM '{request.Id}': {e.Message}");
        }
    }

    /// <summary>
    /// Each stream of an Exec reply is kept up to this many bytes (gRPC's default message limit is 4 MiB).
    /// </summary>
    public const int MaxExecCapture = 1 << 20;

    /// <summary>
    /// The graceful part of StopVm when the agent is ready: ask it to power off, then wait up to
    /// <paramref name="grace"/> for the VM to end. False when the agent is not there or the guest
    /// did not end (the caller then goes on with the worker's Ctrl-Alt-Del and force).
    /// </summary>
    private async Task<bool> TryAgentShutdownAsync(VmEntry entry, TimeSpan grace, CancellationToken ct)
    {
        lock (entry.Gate)
            if (!entry.Record.Vm.AgentReady) return false;
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
            AgentLog.ShutdownFailed(_logger, entry.Id, e.Message);
            return false;
        }
        var until = DateTime.UtcNow + grace;
        while (DateTime.UtcNow < until)
        {
            lock (entry.Gate)
                if (entry.Record.Vm.State is VmState.Stopped or VmState.Failed) return true;
            await Task.Delay(50, ct).ConfigureAwait(false);
        }
        return false;
    }

    private static partial class AgentLog
    {
        [LoggerMessage(40, LogLevel.Information, "VM {Id}: the guest agent is ready")]
        public static partial void Ready(ILogger logger, string id);

        [LoggerMessage(41, LogLevel.Warning, "VM {Id}: the guest agent did not take the shutdown request ({Error}); using Ctrl-Alt-Del")]
        public static partial void ShutdownFailed(ILogger logger, string id, string error);
    }
}
