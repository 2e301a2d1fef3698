using FireSharp.Devices.RateLimiting;

namespace FireSharp.Daemon.Vms;

// The daemon's VMs in its own terms: what VmManager takes and returns. None of these is a wire type; the
// gRPC layer (VmApiMapping) maps firesharp.v1 messages to and from them, and the record store maps them to
// the on-disk record (state.proto).

/// <summary>Where a VM is in its life.</summary>
public enum VmPhase
{
    /// <summary>Being created (the worker is starting and the kernel is being loaded).</summary>
    Creating,
    /// <summary>Built and ready to start.</summary>
    Created,
    /// <summary>vCPUs are running.</summary>
    Running,
    /// <summary>vCPUs are paused.</summary>
    Paused,
    /// <summary>A stop was asked for and the guest has not ended yet.</summary>
    Stopping,
    /// <summary>The guest ended cleanly (reset, power-off or a host stop).</summary>
    Stopped,
    /// <summary>The guest or its worker failed.</summary>
    Failed,
}

/// <summary>Why a VM ended.</summary>
public enum VmEndKind
{
    Reset,
    PowerOff,
    /// <summary>The host stopped the VM.</summary>
    Stopped,
    Halt,
    TripleFault,
    FailEntry,
    InternalError,
    GuestCrash,
    /// <summary>The VMM failed (an ioctl error, or a restart that could not build the machine).</summary>
    VmmError,
    /// <summary>The VM's worker process died, or was gone when the daemon started.</summary>
    WorkerDied,
    /// <summary>The worker's seccomp filter killed it (SIGSYS); <see cref="VmEnd.Syscall"/> names the call when known.</summary>
    Seccomp,
    /// <summary>The VM's memory cgroup killed its worker: guest memory plus the VMM's allowance was used up.</summary>
    OutOfMemory,
}

/// <summary>How a VM ended: the kind, one line for a human, whether it was a clean end, and when the daemon saw it.</summary>
public sealed record VmEnd(VmEndKind Kind, string Reason, bool Clean, DateTimeOffset Time)
{
    /// <summary>For <see cref="VmEndKind.Seccomp"/>: the number of the refused syscall, when the kernel log named it.</summary>
    public int? Syscall { get; init; }
}

/// <summary>The kernel and its boot inputs. Paths are absolute paths on the daemon's host.</summary>
public sealed record KernelConfig(string Path)
{
    /// <summary>An initramfs, or null.</summary>
    public string? InitrdPath { get; init; }

    /// <summary>The command line; null or empty means the VMM's default.</summary>
    public string? Cmdline { get; init; }

    /// <summary>For an ELF with both entry points, enter through PVH.</summary>
    public bool PreferPvh { get; init; }
}

/// <summary>A virtio-blk drive backed by a file.</summary>
public sealed record DriveConfig(string Id, string Path)
{
    public bool ReadOnly { get; init; }

    /// <summary>The guest's root filesystem (root=/dev/vdX on a Linux command line).</summary>
    public bool Root { get; init; }

    /// <summary>The drive's rate limiter (the VMM's bucket specs); null = unlimited.</summary>
    public RateLimiterSpec? RateLimiter { get; init; }
}

/// <summary>A virtio-net interface on a tap.</summary>
public sealed record NicConfig(string Id)
{
    /// <summary>An existing tap device; null: the worker creates one and removes it with the VM.</summary>
    public string? Tap { get; init; }

    /// <summary>"aa:bb:cc:dd:ee:ff", or null for a generated one.</summary>
    public string? Mac { get; init; }

    /// <summary>The guest's IPv4 address with prefix ("10.0.0.2/24"), or null.</summary>
    public string? Ip { get; init; }

    /// <summary>Limits of what the guest receives and sends; null = unlimited.</summary>
    public RateLimiterSpec? RxRateLimiter { get; init; }
    public RateLimiterSpec? TxRateLimiter { get; init; }
}

/// <summary>The virtio-vsock device.</summary>
public sealed record VsockConfig(uint GuestCid);

/// <summary>What a VM is made of.</summary>
public sealed record VmConfig
{
    public required KernelConfig Kernel { get; init; }
    public required int Vcpus { get; init; }
    public required long MemMib { get; init; }

    /// <summary>CPU time the VM may use, in thousandths of a host CPU (1000 = one CPU); 0 for the default (see <see cref="Isolation.CgroupLimits"/>).</summary>
    public int CpuQuotaMillicpus { get; init; }
    public IReadOnlyList<DriveConfig> Drives { get; init; } = [];
    public IReadOnlyList<NicConfig> NetworkInterfaces { get; init; } = [];

    /// <summary>The vsock device, or null for none (the agent implies one).</summary>
    public VsockConfig? Vsock { get; init; }

    /// <summary>Run the FireSharp guest agent (Exec, a graceful stop through it).</summary>
    public bool Agent { get; init; }

    /// <summary>A virtio-rng entropy device.</summary>
    public bool Rng { get; init; }

    /// <summary>The entropy device's rate limiter (with <see cref="Rng"/>); null = unlimited.</summary>
    public RateLimiterSpec? RngRateLimiter { get; init; }
    /// <summary>The network namespace the VM's taps are attached in and its worker joins (a jailed VM), or null for the daemon's.</summary>
    public string? NetnsPath { get; init; }
}

/// <summary>A VM as the daemon knows it: an immutable copy, safe to keep.</summary>
public sealed record VmInfo
{
    public required string Id { get; init; }
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    public required VmConfig Spec { get; init; }
    public VmPhase Phase { get; init; }

    /// <summary>How the VM last ended; null while it has not.</summary>
    public VmEnd? End { get; init; }
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>When the VM last started; null before the first start.</summary>
    public DateTimeOffset? StartedAt { get; init; }

    /// <summary>Milliseconds from the machine's creation to the guest's boot-done signal; 0 while not seen.</summary>
    public double BootTimeMs { get; init; }

    /// <summary>The worker's process id; 0 when none is alive.</summary>
    public int WorkerPid { get; init; }

    /// <summary>With Spec.Agent: the guest agent reported ready (reset when the VM ends).</summary>
    public bool AgentReady { get; init; }
}

/// <summary>Create a VM (and start it, with <see cref="Start"/>).</summary>
public sealed record CreateVmCommand(string Id, VmConfig Spec)
{
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();
    public bool Start { get; init; }
}

/// <summary>Restore a snapshot as a new VM with a worker of its own.</summary>
public sealed record RestoreVmCommand(string Id, string Dir)
{
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    /// <summary>Drive id -> this VM's image for that drive.</summary>
    public IReadOnlyDictionary<string, string> DrivePaths { get; init; } = new Dictionary<string, string>();

    /// <summary>This VM's vsock socket, or null for the daemon's own path for it.</summary>
    public string? VsockPath { get; init; }

    /// <summary>Leave the restored VM paused.</summary>
    public bool Paused { get; init; }

    /// <summary>The restored VM's CPU quota in thousandths of a CPU; 0 for the default.</summary>
    public int CpuQuotaMillicpus { get; init; }
}

/// <summary>Snapshot a running or paused VM into a new directory.</summary>
public sealed record SnapshotVmCommand(string Id, string Dir)
{
    /// <summary>Resume afterwards; otherwise the VM stays paused.</summary>
    public bool Resume { get; init; }

    /// <summary>Only the pages dirtied since the VM's previous snapshot (which must have started tracking).</summary>
    public bool Diff { get; init; }

    /// <summary>Start tracking dirty pages, so later snapshots can be diffs.</summary>
    public bool TrackDirty { get; init; }
}

/// <summary>What a snapshot wrote, and the VM after it.</summary>
public sealed record VmSnapshotInfo
{
    public required string Dir { get; init; }
    public ulong MemoryBytes { get; init; }
    public ulong MemoryBytesWritten { get; init; }
    public long StateFileBytes { get; init; }
    public double DurationMs { get; init; }
    public double PausedMs { get; init; }

    /// <summary>For a diff snapshot: its base directory (else null) and page count.</summary>
    public string? BaseDir { get; init; }
    public uint DiffPages { get; init; }
    public required VmInfo Vm { get; init; }
}

/// <summary>
/// Replace rate limiters of a VM with a live worker: each change names a drive or an interface direction and
/// its new limiter (null = no limit). All are checked before any is applied.
/// </summary>
public sealed record UpdateRateLimitersCommand(string Id, IReadOnlyList<VmRateLimiterChange> Changes);

/// <summary>One limiter to replace; the fields are the request's for the device id and for the limiter, which errors name.</summary>
public sealed record VmRateLimiterChange(RateLimiterTarget Target, string DeviceId, RateLimiterSpec? Limiter, string IdField, string LimiterField);

/// <summary>Run a command in the VM through its guest agent.</summary>
public sealed record ExecCommand(string Id, IReadOnlyList<string> Argv)
{
    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();
    public ReadOnlyMemory<byte> Stdin { get; init; }

    /// <summary>Seconds the program may run; 0 means until the caller's cancellation.</summary>
    public int TimeoutSeconds { get; init; }
}

/// <summary>How an Exec ended: the exit code (128+N for signal N) and what the program printed (each up to a bound).</summary>
public sealed record ExecOutcome(int ExitCode, byte[] Stdout, byte[] Stderr);

/// <summary>What happened to a VM.</summary>
public enum VmEventKind
{
    /// <summary>The current state of a VM, sent first to a watcher that asked for it.</summary>
    Snapshot,
    Created,
    StateChanged,
    BootDone,
    Exited,
    Deleted,
    /// <summary>The watcher was too slow and <see cref="VmLifecycleEvent.Dropped"/> events were lost.</summary>
    Dropped,
    AgentReady,
}

/// <summary>One lifecycle event.</summary>
public sealed record VmLifecycleEvent
{
    public required VmEventKind Kind { get; init; }

    /// <summary>The VM it happened to (empty for Dropped).</summary>
    public string Id { get; init; } = "";

    /// <summary>The VM's phase after the event; null for Deleted and Dropped.</summary>
    public VmPhase? Phase { get; init; }

    /// <summary>For Exited (and Snapshot): how the VM ended.</summary>
    public VmEnd? End { get; init; }
    public double BootTimeMs { get; init; }
    public DateTimeOffset Time { get; init; }
    public string Message { get; init; } = "";
    public long Dropped { get; init; }
}
