using FireSharp.Daemon.Vms;
using FireSharp.Devices.RateLimiting;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Google.Protobuf.Collections;
using Google.Protobuf.WellKnownTypes;

namespace FireSharp.Daemon;

using ApiRateLimiter = FireSharp.Proto.V1.RateLimiter;
using ApiTokenBucket = FireSharp.Proto.V1.TokenBucket;
using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// The one place where firesharp.v1 messages become the daemon's domain types (<see cref="FireSharp.Daemon.Vms"/>)
/// and back. What the domain cannot express (a missing message, a oneof with nothing set, an unknown enum
/// value) is refused here, with the request field at fault; everything else is validated by the domain.
/// The on-disk record (state.proto) embeds the API's Vm message, so the record store maps it with these too.
/// </summary>
public static class VmApiMapping
{
    // ---------------------------------------------------------------- requests

    public static CreateVmCommand ToCommand(CreateVmRequest request) =>
        new(request.Id, ToConfig(request.Spec ?? throw VmApiException.Invalid("spec", "is required"), "spec"))
        {
            Labels = Labels(request.Labels),
            Start = request.Start,
        };

    public static RestoreVmCommand ToCommand(RestoreVmRequest request) => new(request.Id, request.Dir)
    {
        Labels = Labels(request.Labels),
        DrivePaths = Labels(request.Overrides?.DrivePaths),
        VsockPath = NullIfEmpty(request.Overrides?.VsockPath),
        CpuQuotaMillicpus = request.Overrides?.CpuQuotaMillicpus ?? 0,
        Paused = request.Paused,
    };

    public static SnapshotVmCommand ToCommand(CreateSnapshotRequest request) => new(request.Id, request.Dir)
    {
        Resume = request.Resume,
        Diff = request.Diff,
        TrackDirty = request.TrackDirty,
    };

    /// <summary>An update: one change per drive, and one per direction an interface update names (absent = unchanged).</summary>
    public static UpdateRateLimitersCommand ToCommand(UpdateRateLimitersRequest request)
    {
        var changes = new List<VmRateLimiterChange>();
        for (int i = 0; i < request.Drives.Count; i++)
        {
            var d = request.Drives[i];
            changes.Add(new VmRateLimiterChange(RateLimiterTarget.Drive, d.DriveId, FromProto(d.RateLimiter), $"drives[{i}].drive_id", $"drives[{i}].rate_limiter"));
        }
        for (int i = 0; i < request.NetworkInterfaces.Count; i++)
        {
            var n = request.NetworkInterfaces[i];
            string f = $"network_interfaces[{i}]";
            if (n.RxRateLimiter is { } rx) changes.Add(new VmRateLimiterChange(RateLimiterTarget.NetworkRx, n.IfaceId, FromProto(rx), f + ".iface_id", f + ".rx_rate_limiter"));
            if (n.TxRateLimiter is { } tx) changes.Add(new VmRateLimiterChange(RateLimiterTarget.NetworkTx, n.IfaceId, FromProto(tx), f + ".iface_id", f + ".tx_rate_limiter"));
            if (n.RxRateLimiter is null && n.TxRateLimiter is null)
                throw VmApiException.Invalid(f, "names neither rx_rate_limiter nor tx_rate_limiter");
        }
        if (request.RngRateLimiter is { } rng) changes.Add(new VmRateLimiterChange(RateLimiterTarget.Entropy, "", FromProto(rng), "rng_rate_limiter", "rng_rate_limiter"));
        return new UpdateRateLimitersCommand(request.Id, changes);
    }

    /// <summary>A limiter; null for none or one with neither bucket (no limit).</summary>
    public static RateLimiterSpec? FromProto(ApiRateLimiter? limiter) =>
        limiter is null || (limiter.Bandwidth is null && limiter.Ops is null) ? null
            : new RateLimiterSpec(FromProto(limiter.Bandwidth), FromProto(limiter.Ops));

    private static TokenBucketSpec? FromProto(ApiTokenBucket? bucket) =>
        bucket is null ? null : new TokenBucketSpec(bucket.Size, bucket.OneTimeBurst, bucket.RefillTimeMs);

    public static ApiRateLimiter? ToProto(RateLimiterSpec? spec) =>
        spec is null ? null : new ApiRateLimiter { Bandwidth = ToProto(spec.Bandwidth), Ops = ToProto(spec.Ops) };

    private static ApiTokenBucket? ToProto(TokenBucketSpec? spec) =>
        spec is null ? null : new ApiTokenBucket { Size = spec.Size, OneTimeBurst = spec.OneTimeBurst, RefillTimeMs = spec.RefillTimeMs };

    public static ExecCommand ToCommand(ExecRequest request) => new(request.Id, [.. request.Argv])
    {
        Env = Labels(request.Env),
        Stdin = request.Stdin.Memory,
        TimeoutSeconds = request.TimeoutSeconds,
    };

    /// <summary>A spec; <paramref name="field"/> is its path in the request ("spec").</summary>
    public static VmConfig ToConfig(VmSpec spec, string field)
    {
        var kernel = spec.Kernel ?? throw VmApiException.Invalid(field + ".kernel", "is required");
        var machine = spec.Machine ?? throw VmApiException.Invalid(field + ".machine", "is required");
        var nics = new NicConfig[spec.NetworkInterfaces.Count];
        for (int i = 0; i < nics.Length; i++)
        {
            var n = spec.NetworkInterfaces[i];
            string f = $"{field}.network_interfaces[{i}]";
            string? tap = n.HostCase switch
            {
                NetworkInterfaceSpec.HostOneofCase.Tap => n.Tap,
                NetworkInterfaceSpec.HostOneofCase.Auto when n.Auto => null,
                NetworkInterfaceSpec.HostOneofCase.Auto => throw VmApiException.Invalid(f + ".auto", "must be true when set (or set tap instead)"),
                _ => throw VmApiException.Invalid(f + ".host", "set either tap (an existing tap device) or auto"),
            };
            nics[i] = new NicConfig(n.Id)
            {
                Tap = tap,
                Mac = NullIfEmpty(n.Mac),
                Ip = NullIfEmpty(n.Ip),
                RxRateLimiter = FromProto(n.RxRateLimiter),
                TxRateLimiter = FromProto(n.TxRateLimiter),
            };
        }
        return new VmConfig
        {
            Kernel = new KernelConfig(kernel.Path)
            {
                InitrdPath = NullIfEmpty(kernel.InitrdPath),
                Cmdline = NullIfEmpty(kernel.Cmdline),
                PreferPvh = kernel.PreferPvh,
            },
            Vcpus = machine.Vcpus,
            MemMib = machine.MemMib,
            CpuQuotaMillicpus = machine.CpuQuotaMillicpus,
            Drives = [.. spec.Drives.Select(d => new DriveConfig(d.Id, d.Path) { ReadOnly = d.ReadOnly, Root = d.Root, RateLimiter = FromProto(d.RateLimiter) })],
            NetworkInterfaces = nics,
            Vsock = spec.Vsock is null ? null : new VsockConfig(spec.Vsock.GuestCid),
            Agent = spec.Agent,
            Rng = spec.Rng,
            RngRateLimiter = FromProto(spec.RngRateLimiter),
            NetnsPath = NullIfEmpty(spec.NetnsPath),
        };
    }

    /// <summary>A ListVms state filter; VM_STATE_UNSPECIFIED and unknown values are refused.</summary>
    public static HashSet<VmPhase> ToPhases(RepeatedField<VmState> states, string field)
    {
        var phases = new HashSet<VmPhase>();
        for (int i = 0; i < states.Count; i++)
            phases.Add(ToPhase(states[i]) ?? throw VmApiException.Invalid($"{field}[{i}]", $"{(int)states[i]} is not a VM state"));
        return phases;
    }

    public static Dictionary<string, string> Labels(MapField<string, string>? map) =>
        map is null ? new Dictionary<string, string>(StringComparer.Ordinal) : new Dictionary<string, string>(map, StringComparer.Ordinal);

    // ---------------------------------------------------------------- replies

    public static Vm ToProto(VmInfo vm)
    {
        var proto = new Vm
        {
            Id = vm.Id,
            Spec = ToProto(vm.Spec),
            State = ToProto(vm.Phase),
            Exit = vm.End is null ? null : ToProto(vm.End),
            CreatedAt = Timestamp.FromDateTimeOffset(vm.CreatedAt),
            StartedAt = vm.StartedAt is { } started ? Timestamp.FromDateTimeOffset(started) : null,
            BootTimeMs = vm.BootTimeMs,
            WorkerPid = vm.WorkerPid,
            AgentReady = vm.AgentReady,
        };
        foreach (var (key, value) in vm.Labels) proto.Labels[key] = value;
        return proto;
    }

    public static VmSpec ToProto(VmConfig spec)
    {
        var proto = new VmSpec
        {
            Kernel = new KernelSpec
            {
                Path = spec.Kernel.Path,
                InitrdPath = spec.Kernel.InitrdPath ?? "",
                Cmdline = spec.Kernel.Cmdline ?? "",
                PreferPvh = spec.Kernel.PreferPvh,
            },
            Machine = new MachineSpec { Vcpus = spec.Vcpus, MemMib = spec.MemMib, CpuQuotaMillicpus = spec.CpuQuotaMillicpus },
            Vsock = spec.Vsock is null ? null : new VsockSpec { GuestCid = spec.Vsock.GuestCid },
            Agent = spec.Agent,
            Rng = spec.Rng,
            RngRateLimiter = ToProto(spec.RngRateLimiter),
            NetnsPath = spec.NetnsPath ?? "",
        };
        foreach (var d in spec.Drives)
            proto.Drives.Add(new DriveSpec { Id = d.Id, Path = d.Path, ReadOnly = d.ReadOnly, Root = d.Root, RateLimiter = ToProto(d.RateLimiter) });
        foreach (var n in spec.NetworkInterfaces)
        {
            var nic = new NetworkInterfaceSpec
            {
                Id = n.Id, Mac = n.Mac ?? "", Ip = n.Ip ?? "", RxRateLimiter = ToProto(n.RxRateLimiter), TxRateLimiter = ToProto(n.TxRateLimiter),
            };
            if (n.Tap is null) nic.Auto = true;
            else nic.Tap = n.Tap;
            proto.NetworkInterfaces.Add(nic);
        }
        return proto;
    }

    public static SnapshotInfo ToProto(VmSnapshotInfo info) => new()
    {
        Dir = info.Dir,
        MemoryBytes = info.MemoryBytes,
        MemoryBytesWritten = info.MemoryBytesWritten,
        StateFileBytes = info.StateFileBytes,
        DurationMs = info.DurationMs,
        PausedMs = info.PausedMs,
        BaseDir = info.BaseDir ?? "",
        DiffPages = info.DiffPages,
        Vm = ToProto(info.Vm),
    };

    public static ExecResponse ToProto(ExecOutcome outcome) => new()
    {
        ExitCode = outcome.ExitCode,
        Stdout = ByteString.CopyFrom(outcome.Stdout),
        Stderr = ByteString.CopyFrom(outcome.Stderr),
    };

    public static VmEvent ToProto(VmLifecycleEvent ev) => new()
    {
        Type = ev.Kind switch
        {
            VmEventKind.Snapshot => EventType.Snapshot,
            VmEventKind.Created => EventType.Created,
            VmEventKind.StateChanged => EventType.StateChanged,
            VmEventKind.BootDone => EventType.BootDone,
            VmEventKind.Exited => EventType.Exited,
            VmEventKind.Deleted => EventType.Deleted,
            VmEventKind.Dropped => EventType.Dropped,
            VmEventKind.AgentReady => EventType.AgentReady,
            _ => EventType.Unspecified,
        },
        Id = ev.Id,
        State = ev.Phase is { } phase ? ToProto(phase) : VmState.Unspecified,
        Exit = ev.End is null ? null : ToProto(ev.End),
        BootTimeMs = ev.BootTimeMs,
        Time = Timestamp.FromDateTimeOffset(ev.Time),
        Message = ev.Message,
        Dropped = ev.Dropped,
    };

    public static VmExitInfo ToProto(VmEnd end) => new VmExitInfo
    {
        Kind = end.Kind switch
        {
            VmEndKind.Reset => ExitKind.Reset,
            VmEndKind.PowerOff => ExitKind.PowerOff,
            VmEndKind.Stopped => ExitKind.Stopped,
            VmEndKind.Halt => ExitKind.Halt,
            VmEndKind.TripleFault => ExitKind.TripleFault,
            VmEndKind.FailEntry => ExitKind.FailEntry,
            VmEndKind.InternalError => ExitKind.InternalError,
            VmEndKind.GuestCrash => ExitKind.GuestCrash,
            VmEndKind.WorkerDied => ExitKind.WorkerDied,
            VmEndKind.Seccomp => ExitKind.Seccomp,
            VmEndKind.OutOfMemory => ExitKind.OutOfMemory,
            _ => ExitKind.VmmError,
        },
        Reason = end.Reason,
        Clean = end.Clean,
        Time = Timestamp.FromDateTimeOffset(end.Time),
    }.WithSyscall(end.Syscall);

    private static VmExitInfo WithSyscall(this VmExitInfo info, int? syscall)
    {
        if (syscall is { } nr) info.Syscall = nr;
        return info;
    }

    public static VmState ToProto(VmPhase phase) => phase switch
    {
        VmPhase.Creating => VmState.Creating,
        VmPhase.Created => VmState.Created,
        VmPhase.Running => VmState.Running,
        VmPhase.Paused => VmState.Paused,
        VmPhase.Stopping => VmState.Stopping,
        VmPhase.Stopped => VmState.Stopped,
        VmPhase.Failed => VmState.Failed,
        _ => VmState.Unspecified,
    };

    public static VmPhase? ToPhase(VmState state) => state switch
    {
        VmState.Creating => VmPhase.Creating,
        VmState.Created => VmPhase.Created,
        VmState.Running => VmPhase.Running,
        VmState.Paused => VmPhase.Paused,
        VmState.Stopping => VmPhase.Stopping,
        VmState.Stopped => VmPhase.Stopped,
        VmState.Failed => VmPhase.Failed,
        _ => null,
    };

    // ---------------------------------------------------------------- the record on disk (state.proto)

    /// <summary>A VM of a record read from disk; null when the record lacks what every record has (id, spec, a state).</summary>
    public static VmInfo? FromRecord(Vm vm)
    {
        if (vm.Spec is null || ToPhase(vm.State) is not { } phase) return null;
        VmConfig spec;
        try
        {
            spec = ToConfig(vm.Spec, "spec");
        }
        catch (VmApiException)
        {
            return null;
        }
        return new VmInfo
        {
            Id = vm.Id,
            Labels = Labels(vm.Labels),
            Spec = spec,
            Phase = phase,
            End = vm.Exit is { } exit
                ? new VmEnd(FromProto(exit.Kind), exit.Reason, exit.Clean, exit.Time?.ToDateTimeOffset() ?? default) { Syscall = exit.HasSyscall ? exit.Syscall : null }
                : null,
            CreatedAt = vm.CreatedAt?.ToDateTimeOffset() ?? default,
            StartedAt = vm.StartedAt?.ToDateTimeOffset(),
            BootTimeMs = vm.BootTimeMs,
            WorkerPid = vm.WorkerPid,
            AgentReady = vm.AgentReady,
        };
    }

    /// <summary>The RestoreVm request a record keeps for a restored VM (a restart restores it again).</summary>
    public static RestoreVmRequest ToProto(RestoreVmCommand command)
    {
        var request = new RestoreVmRequest { Id = command.Id, Dir = command.Dir, Paused = command.Paused };
        foreach (var (key, value) in command.Labels) request.Labels[key] = value;
        if (command.DrivePaths.Count > 0 || command.VsockPath is not null || command.CpuQuotaMillicpus != 0)
        {
            request.Overrides = new RestoreOverrides { VsockPath = command.VsockPath ?? "", CpuQuotaMillicpus = command.CpuQuotaMillicpus };
            foreach (var (driveId, path) in command.DrivePaths) request.Overrides.DrivePaths[driveId] = path;
        }
        return request;
    }

    private static VmEndKind FromProto(ExitKind kind) => kind switch
    {
        ExitKind.Reset => VmEndKind.Reset,
        ExitKind.PowerOff => VmEndKind.PowerOff,
        ExitKind.Stopped => VmEndKind.Stopped,
        ExitKind.Halt => VmEndKind.Halt,
        ExitKind.TripleFault => VmEndKind.TripleFault,
        ExitKind.FailEntry => VmEndKind.FailEntry,
        ExitKind.InternalError => VmEndKind.InternalError,
        ExitKind.GuestCrash => VmEndKind.GuestCrash,
        ExitKind.WorkerDied => VmEndKind.WorkerDied,
        ExitKind.Seccomp => VmEndKind.Seccomp,
        ExitKind.OutOfMemory => VmEndKind.OutOfMemory,
        _ => VmEndKind.VmmError,
    };

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}
