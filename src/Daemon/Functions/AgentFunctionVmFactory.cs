using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Daemon.Vms;
using FireSharp.Pool;
using FireSharp.Daemon.Functions.Lambda;
using FireSharp.Proto.Agent;
using Microsoft.Extensions.Logging;
using static FireSharp.Daemon.Functions.FunctionVmLog;

namespace FireSharp.Daemon.Functions;

using StartKind = FireSharp.Pool.StartKind;

/// <summary>
/// The daemon's real function VMs: each one a VM of <see cref="VmManager"/> (its own worker process) running the
/// guest agent, which runs the function's runtime behind the Lambda Runtime API.
/// <list type="bullet">
///   <item>Drives: the root filesystem (read-only, root), the layers (read-only; one layer is mounted at /opt, several
///   at /opt/layer1.. on a tmpfs /opt), the code (read-only at /var/task). The agent mounts them (firesharp.mount).</item>
///   <item>Boot cold start: create + start, wait for the agent's ready report, FunctionInit. With snapshot start and no
///   snapshot of this version yet, the VM is then snapshotted (paused, written, resumed) into
///   <c>&lt;StateDir&gt;/functions/&lt;name&gt;/snapshots/&lt;version&gt;-&lt;hash&gt;</c>.</item>
///   <item>Snapshot cold start: RestoreVm of that snapshot (a fresh vsock socket per clone), then the agent is found
///   again; the runtime is initialized already. A restore that fails falls back to a boot (logged).</item>
/// </list>
/// VMs are labelled <c>firesharp.function=NAME</c>; ones left by an earlier daemon are removed at start-up.
/// </summary>
public sealed class AgentFunctionVmFactory(VmManager manager, DaemonOptions options, ILogger<AgentFunctionVmFactory> logger) : IFunctionVmFactory
{
    public const string FunctionLabel = FunctionVmSpec.FunctionLabel;
    public const string VersionLabel = FunctionVmSpec.VersionLabel;

    /// <summary>Until the agent reports ready after a boot (Linux on PVM takes ~40 s).</summary>
    public TimeSpan BootTimeout { get; init; } = TimeSpan.FromMinutes(4);

    /// <summary>Lambda's init phase limit is 10 s; on PVM the guest kernel is emulated, so processes start slowly.</summary>
    public TimeSpan InitTimeout { get; init; } = Kvm.KvmSystem.IsPvmHost ? TimeSpan.FromSeconds(90) : TimeSpan.FromSeconds(10);

    /// <summary>Until a restored VM's agent answers.</summary>
    public TimeSpan RestoreAgentTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Boots that end before the agent is ready (the known PVM SIGSEGV, docs/pvm.md) are retried this many times.</summary>
    public int BootRetries { get; init; } = 2;

    /// <summary>Before a snapshot, until the agent has closed the connection the host ended.</summary>
    public TimeSpan AgentCloseTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Names the runtime sees: the function's ARN (Lambda-Runtime-Invoked-Function-Arn).</summary>
    public LambdaIdentity Identity { get; init; } = new();

    private readonly ConcurrentDictionary<string, SemaphoreSlim> _snapshotLocks = new(StringComparer.Ordinal);

    /// <summary>Deletes function VMs left by an earlier daemon (their pool is gone).</summary>
    public async Task RemoveOrphansAsync(CancellationToken ct)
    {
        foreach (var vm in manager.List())
        {
            if (!vm.Labels.ContainsKey(FunctionLabel)) continue;
            try
            {
                await manager.DeleteAsync(vm.Id, force: true, ct).ConfigureAwait(false);
                LogOrphan(logger, vm.Id);
            }
            catch (VmApiException e)
            {
                LogDeleteFailed(logger, vm.Id, e.Message);
            }
        }
    }

    public async Task<IFunctionVm> CreateAsync(FunctionDefinition definition, CancellationToken cancellationToken)
    {
        long started = Stopwatch.GetTimestamp();
        string snapshotDir = FunctionVmSpec.SnapshotDir(definition, options.FunctionsDir);
        if (definition.SnapshotStart && Directory.Exists(snapshotDir))
        {
            string id = FunctionVmSpec.NewVmId(definition.Name, options.MaxIdLength);
            using var span = StartSpan(FunctionRestoreSpan, definition, id);
            try
            {
                return await RestoreAsync(definition, id, snapshotDir, started, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is VmApiException or AgentException or TimeoutException or FunctionInitException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                Tracing.DaemonTracing.Fail(span, e);
                LogRestoreFailed(logger, definition.Name, definition.Version, snapshotDir, e.Message);
                await DestroyAsync(id).ConfigureAwait(false);
            }
        }
        for (int attempt = 0; ; attempt++)
        {
            string id = FunctionVmSpec.NewVmId(definition.Name, options.MaxIdLength);
            using var span = StartSpan(FunctionBootSpan, definition, id);
            try
            {
                return await BootAsync(definition, id, started, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (Tracing.DaemonTracing.FailWith(span, e))
            {
                throw; // not reached: FailWith only records
            }
            catch (VmEndedException e) when (attempt < BootRetries)
            {
                LogBootRetry(logger, id, e.Message);
                await DestroyAsync(id).ConfigureAwait(false);
            }
            catch (Exception e) when (e is VmEndedException or TimeoutException or AgentException)
            {
                await DestroyAsync(id).ConfigureAwait(false);
                throw VmApiException.Unavailable($"function {definition.Name}: its VM could not start: {e.Message}");
            }
            catch
            {
                await DestroyAsync(id).ConfigureAwait(false);
                throw;
            }
        }
    }

    /// <summary>The spans of a cold start's "restore or boot", under the pool's "pool create vm".</summary>
    public const string FunctionRestoreSpan = "function restore", FunctionBootSpan = "function boot";

    private static Activity? StartSpan(string name, FunctionDefinition f, string id)
    {
        var span = Tracing.DaemonTracing.Start(name);
        span?.SetTag("faas.name", f.Name);
        span?.SetTag("faas.version", f.Version);
        span?.SetTag(Tracing.DaemonTracing.VmIdTag, id);
        return span;
    }

    public Task DiscardSnapshotsAsync(string functionName, string? keepVersion, CancellationToken cancellationToken)
    {
        string dir = Path.Combine(options.FunctionsDir, functionName, "snapshots");
        if (!Directory.Exists(dir)) return Task.CompletedTask;
        foreach (var d in Directory.GetDirectories(dir))
        {
            if (keepVersion is not null && Path.GetFileName(d).StartsWith(keepVersion + "-", StringComparison.Ordinal)) continue;
            try { Directory.Delete(d, recursive: true); }
            catch (IOException e) { LogDeleteFailed(logger, d, e.Message); }
        }
        return Task.CompletedTask;
    }

    // ---------------------------------------------------------------- boot

    private async Task<IFunctionVm> BootAsync(FunctionDefinition f, string id, long started, CancellationToken ct)
    {
        // The boot runs at the VM's default CPU quota (its vCPUs), not the function's share: the kernel boot and the
        // runtime's init are the platform's work, done once per snapshot (on a PVM host the emulated boot would
        // take minutes at 7% of a CPU). The function's share applies from its first invocation (below).
        await manager.CreateAsync(new CreateVmCommand(id, FunctionVmSpec.Config(f) with { CpuQuotaMillicpus = 0 }) { Labels = FunctionVmSpec.Labels(f), Start = true }, ct).ConfigureAwait(false);
        await WaitForAgentReadyAsync(id, ct).ConfigureAwait(false);

        var client = await ConnectAsync(id, TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
        FunctionInitReply init;
        try
        {
            // The Runtime API listens on 127.0.0.1: make sure the guest's loopback is up (an image without
            // networking setup leaves it down).
            try
            {
                await client.ExecAsync(new AgentCommand(["ip", "link", "set", "lo", "up"]) { Timeout = TimeSpan.FromSeconds(30) }, ct).ConfigureAwait(false);
            }
            catch (AgentException e) when (e.Failure == AgentFailure.Remote)
            {
                LogLoopback(logger, id, e.Message);
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(InitTimeout + TimeSpan.FromSeconds(10));
            init = await client.InitFunctionAsync(InitRequest(f), timeout.Token).ConfigureAwait(false);
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        if (!init.Ok)
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw new FunctionInitException(init.ErrorType.Length > 0 ? init.ErrorType : "Runtime.InitError", init.ErrorMessage, init.LogTail);
        }
        var initDuration = Stopwatch.GetElapsedTime(started);
        LogBooted(logger, f.Name, f.Version, id, initDuration.TotalMilliseconds, init.InitDurationUs / 1000.0);

        if (f.SnapshotStart && !Directory.Exists(FunctionVmSpec.SnapshotDir(f, options.FunctionsDir)))
            client = await TakeSnapshotAsync(f, id, client, ct).ConfigureAwait(false);
        try
        {
            await manager.SetCpuQuotaAsync(id, CpuShare(f), ct).ConfigureAwait(false);
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return new AgentFunctionVm(this, f.Name, id, StartKind.BootCold, initDuration, client);
    }

    /// <summary>
    /// Snapshots the initialized VM once per version. The agent connection is closed first (connections do not
    /// survive a restore) and opened again after. A failed snapshot is logged; the VM still serves.
    /// </summary>
    private async Task<AgentClient> TakeSnapshotAsync(FunctionDefinition f, string id, AgentClient client, CancellationToken ct)
    {
        string final = FunctionVmSpec.SnapshotDir(f, options.FunctionsDir);
        var gate = _snapshotLocks.GetOrAdd(final, _ => new SemaphoreSlim(1, 1));
        if (!await gate.WaitAsync(0, ct).ConfigureAwait(false)) return client; // another VM of this version is taking it
        try
        {
            if (Directory.Exists(final)) return client;
            await CloseForSnapshotAsync(id, client, ct).ConfigureAwait(false);
            Directory.CreateDirectory(Path.GetDirectoryName(final)!);
            string tmp = final + ".tmp-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
            long t0 = Stopwatch.GetTimestamp();
            try
            {
                var info = await manager.CreateSnapshotAsync(new SnapshotVmCommand(id, tmp) { Resume = true }, ct).ConfigureAwait(false);
                Directory.Move(tmp, final);
                LogSnapshot(logger, f.Name, f.Version, final, Stopwatch.GetElapsedTime(t0).TotalMilliseconds, info.MemoryBytesWritten >> 20);
            }
            catch (Exception e) when (e is VmApiException or IOException or Snapshot.SnapshotException)
            {
                LogSnapshotFailed(logger, f.Name, f.Version, e.Message);
                try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); } catch (IOException) { }
                try { await manager.ResumeAsync(id, ct).ConfigureAwait(false); } catch (VmApiException) { }
            }
            return await ConnectAsync(id, TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// Ends the agent connection before a snapshot, and waits until the agent has closed its side (the guest has
    /// processed the close), so the snapshot never holds a connection the guest still thinks is open. Bounded by
    /// <see cref="AgentCloseTimeout"/>: past it the snapshot goes ahead (a restore resets every connection anyway), logged.
    /// </summary>
    private async Task CloseForSnapshotAsync(string id, AgentClient client, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(AgentCloseTimeout);
        bool closed;
        try { closed = await client.CloseAndWaitForAgentAsync(timeout.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { closed = false; }
        if (!closed) LogCloseUnconfirmed(logger, id, AgentCloseTimeout.TotalSeconds);
    }

    // ---------------------------------------------------------------- restore

    private async Task<IFunctionVm> RestoreAsync(FunctionDefinition f, string id, string snapshotDir, long started, CancellationToken ct)
    {
        await manager.RestoreAsync(new RestoreVmCommand(id, snapshotDir) { Labels = FunctionVmSpec.Labels(f), CpuQuotaMillicpus = CpuShare(f) }, ct).ConfigureAwait(false);
        var client = await ConnectAsync(id, RestoreAgentTimeout, ct).ConfigureAwait(false);
        var initDuration = Stopwatch.GetElapsedTime(started);
        LogRestored(logger, f.Name, f.Version, id, initDuration.TotalMilliseconds);
        return new AgentFunctionVm(this, f.Name, id, StartKind.SnapshotCold, initDuration, client);
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>The function VM's CPU quota: Lambda's share of its memory, or 0 (the VM's default) with FunctionCpuShare off.</summary>
    private int CpuShare(FunctionDefinition f) => options.FunctionCpuShare ? LambdaResources.CpuQuotaMillicpus(f.MemoryMib) : 0;

    private FunctionInitRequest InitRequest(FunctionDefinition f)
    {
        var r = new FunctionInitRequest
        {
            FunctionName = f.Name,
            FunctionVersion = f.Version,
            Handler = f.Handler,
            MemoryMib = (uint)f.MemoryMib,
            InitTimeoutMs = (uint)InitTimeout.TotalMilliseconds,
        };
        r.Env.Add(f.Environment.ToDictionary());
        return r;
    }

    /// <summary>Polls the VM until its agent reported ready; <see cref="VmEndedException"/> when the VM ended first.</summary>
    private async Task WaitForAgentReadyAsync(string id, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(BootTimeout);
        try
        {
            while (true)
            {
                var vm = manager.Get(id);
                if (vm.AgentReady && vm.Phase == VmPhase.Running) return;
                if (vm.Phase is VmPhase.Stopped or VmPhase.Failed)
                    throw new VmEndedException($"VM {id} ended before its agent was ready: {vm.End?.Kind} {vm.End?.Reason}");
                await Task.Delay(50, timeout.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"the guest agent of VM {id} did not report ready within {BootTimeout.TotalSeconds:F0} s");
        }
    }

    /// <summary>Connects to the VM's agent (retrying while it does not answer yet).</summary>
    private async Task<AgentClient> ConnectAsync(string id, TimeSpan within, CancellationToken ct)
    {
        var until = Stopwatch.GetTimestamp() + (long)(within.TotalSeconds * Stopwatch.Frequency);
        string uds = manager.VsockPath(id);
        while (true)
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct);
                attempt.CancelAfter(TimeSpan.FromSeconds(10));
                return await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: attempt.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is AgentException or OperationCanceledException or IOException or System.Net.Sockets.SocketException)
            {
                var vm = manager.Get(id);
                if (vm.Phase is VmPhase.Stopped or VmPhase.Failed)
                    throw new VmEndedException($"VM {id} ended: {vm.End?.Kind} {vm.End?.Reason}");
                if (Stopwatch.GetTimestamp() > until) throw new TimeoutException($"the guest agent of VM {id} does not answer: {e.Message}");
                await Task.Delay(100, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Deletes the VM (by force), ignoring a VM that is gone.</summary>
    internal async Task DestroyAsync(string id)
    {
        try
        {
            await manager.DeleteAsync(id, force: true, CancellationToken.None).ConfigureAwait(false);
        }
        catch (VmApiException e) when (e.Kind == VmErrorKind.NotFound) { }
        catch (VmApiException e)
        {
            LogDeleteFailed(logger, id, e.Message);
        }
    }

    /// <summary>The VM stopped or failed before it was usable (a boot is retried for it).</summary>
    private sealed class VmEndedException(string message) : Exception(message);
}
