using FireSharp.Boot;
using FireSharp.Daemon;
using FireSharp.Snapshot;
using Google.Protobuf;

namespace FireSharp.Fuzz;

/// <summary>Every fuzz target by name (the directory names under tests/fuzz/corpus and tests/fuzz/crashes).</summary>
public static class FuzzTargets
{
    private static bool None(Exception e) => false;

    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new("virtqueue", "split virtqueue chains (direct, indirect, event index) through the virtio-mmio transport", DeviceTargets.Virtqueue, None),
        new("virtio-blk", "virtio-blk requests from guest memory", DeviceTargets.Block, None),
        new("virtio-net", "virtio-net transmit chains (and receive buffers) from guest memory", DeviceTargets.Net, None),
        new("vsock", "virtio-vsock packets on the transmit queue from guest memory", DeviceTargets.Vsock, None),
        new("snapshot-state", "the snapshot state file reader (CRC recomputed or raw)", DataTargets.SnapshotState, e => e is SnapshotException),
        new("elf", "the ELF kernel loader", BootTargets.Elf, e => e is BootException),
        new("pvh", "the PVH entry note, entry choice and hvm_start_info", BootTargets.Pvh, e => e is BootException),
        new("bzimage", "the bzImage loader and boot_params", BootTargets.BzImage, e => e is BootException),
        new("worker-framing", "daemon-worker frames (WorkerRequest / WorkerMessage)", DataTargets.WorkerFraming,
            e => e is InvalidDataException or EndOfStreamException or InvalidProtocolBufferException),
        new("agent-framing", "agent frames in pieces (Request / Response)", DataTargets.AgentFraming, None),
        new("create-vm", "CreateVmRequest through VmApiMapping and SpecValidator", DataTargets.CreateVm,
            e => e is VmApiException or InvalidProtocolBufferException),
    ];

    public static FuzzTarget Get(string name) =>
        All.FirstOrDefault(t => t.Name == name)
        ?? throw new ArgumentException($"no fuzz target '{name}'; targets: {string.Join(", ", All.Select(t => t.Name))}", nameof(name));
}
