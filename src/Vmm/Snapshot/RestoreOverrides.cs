using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Manager;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Vsock;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Snapshot;

/// <summary>
/// What a restore may change about the snapshotted machine, for clones restored from one snapshot:
/// each needs its own host-side identities (disk copies, vsock socket path, tap device) and its own
/// console. Everything a clone does not override is taken from the snapshot.
/// </summary>
public sealed record RestoreOverrides
{
    public static RestoreOverrides Default { get; } = new();

    /// <summary>Resume the vCPUs after restoring (the default); otherwise the VM is left paused.</summary>
    public bool Resume { get; init; } = true;

    /// <summary>Where this VM's COM1 output goes.</summary>
    public ISerialSink Serial { get; init; } = NullSerialSink.Instance;

    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>
    /// Runs once the machine is built and its state set, just before its vCPU threads start (the worker installs its
    /// seccomp filter here). An exception fails the restore.
    /// </summary>
    public Action? BeforeVcpusStart { get; init; }

    /// <summary>Apply the PVM workarounds; null = detect on this host.</summary>
    public bool? Pvm { get; init; }

    /// <summary>Drive id → host path of this clone's copy of that drive (virtio-blk devices only).</summary>
    public IReadOnlyDictionary<string, string> DrivePaths { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// This clone's host Unix socket for the vsock device. Connections that were open at snapshot time
    /// do not survive: the guest gets a transport reset event, as in Firecracker.
    /// </summary>
    public string? VsockUdsPath { get; init; }

    /// <summary>
    /// The keys the snapshot (and each base of a diff) must be signed with; checked on the handles the restore then
    /// reads, before anything is parsed (<see cref="SnapshotFiles.OpenVerifiedChain"/>). Null: this process verifies
    /// nothing (a jailed worker, whose jailer verified the files it handed over; or an unauthenticated restore).
    /// </summary>
    public SnapshotKeys? Keys { get; init; }

    /// <summary>Network interface id → the tap device this clone uses instead.</summary>
    public IReadOnlyDictionary<string, string> TapNames { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// When set, the device set the caller expects (ids and kinds; settings are not compared). A
    /// snapshot with any other set is refused with <see cref="SnapshotErrorReason.DeviceSetMismatch"/>
    /// before a VM is created.
    /// </summary>
    public IReadOnlyList<DeviceDescriptor>? ExpectedDevices { get; init; }

    /// <summary>The host-side overrides above, as the device kinds they belong to take them.</summary>
    public IReadOnlyList<DeviceOverride> DeviceOverrides =>
    [
        .. DrivePaths.Select(kv => new DeviceOverride(BlockDeviceKind.Name, kv.Key, kv.Value)),
        .. TapNames.Select(kv => new DeviceOverride(NetDeviceKind.Name, kv.Key, kv.Value)),
        .. VsockUdsPath is { } path ? [new DeviceOverride(VsockDeviceKind.Name, null, path)] : Array.Empty<DeviceOverride>(),
    ];
}
