namespace FireSharp.Devices.Virtio;

/// <summary>
/// A virtio device type (block, net, ...) behind a <see cref="VirtioMmioTransport"/>. The transport owns the
/// registers, feature negotiation, the queues and interrupts; the device owns its config space and what a
/// request means. It sees guest memory only through validated descriptor chains.
/// </summary>
public interface IVirtioDevice
{
    VirtioDeviceType DeviceType { get; }

    /// <summary>Stable id within a VM, e.g. "virtio-blk:rootfs".</summary>
    string Id { get; }

    int QueueCount { get; }

    /// <summary>QueueNumMax of every queue (a power of two).</summary>
    ushort MaxQueueSize { get; }

    /// <summary>Device-type feature bits offered (the transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC).</summary>
    ulong DeviceFeatures { get; }

    /// <summary>Guest read of the device config space; bytes past its end read as zero.</summary>
    void ReadConfig(uint offset, Span<byte> data);

    /// <summary>Guest write of the device config space (most fields are read-only and ignore writes).</summary>
    void WriteConfig(uint offset, ReadOnlySpan<byte> data);

    /// <summary>The driver set DRIVER_OK with these negotiated features.</summary>
    void Activate(ulong negotiatedFeatures);

    /// <summary>The driver reset the device (status 0).</summary>
    void Reset();

    /// <summary>
    /// Processes what the driver made available on one queue. Called by the transport (on the device's worker
    /// thread, or inline on a vCPU thread) and never concurrently for the same queue. Exceptions are device
    /// bugs: the transport then marks the device DEVICE_NEEDS_RESET.
    /// </summary>
    void ProcessQueue(VirtqueueContext queue);

    /// <summary>Device-specific state for snapshots (the transport stores it alongside its own).</summary>
    byte[] SaveState();

    void RestoreState(ReadOnlySpan<byte> state);
}

/// <summary>
/// A virtio device that runs its own <see cref="VirtioEventLoop"/> because it watches host descriptors besides its
/// queues (virtio-net's tap, virtio-vsock's sockets). The device manager wires these queue eventfds into KVM and
/// starts the loop; a device without this interface gets a queue-only loop from the manager
/// (<see cref="VirtioEventLoop.ForQueues"/>). Either way every virtio device runs on a thread of its own, woken by
/// eventfds. Dispose stops the loop.
/// </summary>
public interface IVirtioLoopDevice : IVirtioDevice, IDisposable
{
    /// <summary>The eventfd that wakes the device for queue <paramref name="index"/> (for KVM_IOEVENTFD, datamatch = index).</summary>
    EventFd QueueEvent(int index);

    /// <summary>Wakes the loop for one queue; the transport's <see cref="VirtioMmioTransport.QueueNotifyHandler"/>.</summary>
    void Notify(int queue);

    /// <summary>The transport in front of the device: the loop runs its queues through it.</summary>
    void Attach(VirtioMmioTransport transport);

    /// <summary>Starts the loop's thread (after <see cref="Attach"/>).</summary>
    void Start();
}
