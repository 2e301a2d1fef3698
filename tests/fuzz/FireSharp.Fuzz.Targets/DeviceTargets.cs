using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Memory;

namespace FireSharp.Fuzz;

/// <summary>
/// The virtqueue and the virtio devices' request parsing, each behind a real virtio-mmio transport over guest
/// memory built from the input (<see cref="QueueImage"/>). A device must never throw and never log an internal
/// failure: a hostile chain ends in a completed request with an error status, or in DEVICE_NEEDS_RESET.
/// </summary>
public static class DeviceTargets
{
    private static long s_sockets;

    /// <summary>The split virtqueue's chain walking (direct, indirect, event index) with a device that reads every readable byte and fills every writable one.</summary>
    public static void Virtqueue(byte[] input) => RunInline(input, _ => new EchoDevice());

    /// <summary>virtio-blk requests (header, data, status) against a 64 KiB disk in memory.</summary>
    public static void Block(byte[] input)
    {
        // Bit 2 of the features byte makes the disk read-only (the queue image ignores it).
        bool readOnly = input.Length > 1 && (input[1] & 4) != 0;
        RunInline(input, logger => new VirtioBlock(new ArrayBackend(64 * 1024, readOnly), "fuzz", "fuzz-serial", logger, 256));
    }

    /// <summary>A device whose queues the transport runs inline on QueueNotify, over guest memory built from the input.</summary>
    private static void RunInline(byte[] input, Func<FuzzLogger, IVirtioDevice> create)
    {
        using var memory = GuestMemory.CreateAnonymous(QueueImage.MemoryBytes);
        var logger = new FuzzLogger();
        var device = create(logger);
        try
        {
            var image = QueueImage.Decode(input, memory, device.QueueCount);
            var transport = new VirtioMmioTransport(device, memory, new NullInterruptLine(), logger);
            FuzzMmio.Bringup(transport, image, device.QueueCount);
            FuzzMmio.NotifyAll(transport, image);
        }
        finally
        {
            (device as IDisposable)?.Dispose();
        }
        logger.ThrowIfFailed();
    }

    /// <summary>virtio-net: transmit chains (virtio-net header and frame) sent to a socket pair, and receive buffers.</summary>
    public static void Net(byte[] input)
    {
        using var memory = GuestMemory.CreateAnonymous(QueueImage.MemoryBytes);
        var image = QueueImage.Decode(input, memory, 2);
        var logger = new FuzzLogger();
        var (backend, peer) = SocketPairBackend.Create(NetOffloads.All);
        using (peer)
        using (var device = new VirtioNet("fuzz", backend, [0x02, 0xfc, 0, 0, 0, 1], logger, 256))
        {
            BringupAndNotify(device, memory, image, logger);
            // A frame from the network, so that any receive buffers the input offered are used too.
            peer.Send(new byte[60]);
            Pump(device);
        }
        logger.ThrowIfFailed();
    }

    /// <summary>virtio-vsock: packets on the transmit queue (requests, data, credit, shutdown, reset) with receive and event buffers.</summary>
    public static void Vsock(byte[] input)
    {
        using var memory = GuestMemory.CreateAnonymous(QueueImage.MemoryBytes);
        var image = QueueImage.Decode(input, memory, 3);
        var logger = new FuzzLogger();
        // Nothing listens on the host side: a guest connection attempt is refused with a reset.
        string uds = Path.Combine(Path.GetTempPath(), $"firesharp-fuzz-{Environment.ProcessId}", $"v{Interlocked.Increment(ref s_sockets)}.sock");
        Directory.CreateDirectory(Path.GetDirectoryName(uds)!);
        using (var device = new VirtioVsock(new VsockDeviceSpec(42, uds), logger, maxConnections: 16, queueSize: 256))
        {
            BringupAndNotify(device, memory, image, logger);
        }
        logger.ThrowIfFailed();
    }

    /// <summary>Puts a loop device behind a transport, brings it up, notifies the queues the image published on and runs its loop.</summary>
    private static void BringupAndNotify(IVirtioLoopDevice device, GuestMemory memory, QueueImage image, FuzzLogger logger)
    {
        var transport = new VirtioMmioTransport(device, memory, new NullInterruptLine(), logger) { QueueNotifyHandler = device.Notify };
        device.Attach(transport);
        FuzzMmio.Bringup(transport, image, device.QueueCount);
        Pump(device);
        FuzzMmio.NotifyAll(transport, image);
        Pump(device);
    }

    /// <summary>Turns a loop device's event loop until it is idle (bounded, so a device that never settles is a hang, not an endless loop here).</summary>
    private static void Pump(IVirtioLoopDevice device)
    {
        var run = device switch
        {
            VirtioNet n => (Func<int, int>)n.RunOnce,
            VirtioVsock v => v.RunOnce,
            _ => throw new ArgumentException("not a loop device", nameof(device)),
        };
        int idle = 0;
        for (int i = 0; i < 2000 && idle < 3; i++) idle = run(0) == 0 ? idle + 1 : 0;
    }

    /// <summary>A device for the bare virtqueue: reads every readable byte of a chain, fills every writable one.</summary>
    private sealed class EchoDevice : IVirtioDevice
    {
        private readonly byte[] _buffer = new byte[1 << 16];

        public VirtioDeviceType DeviceType => VirtioDeviceType.Entropy;
        public string Id => "fuzz-echo";
        public int QueueCount => 1;
        public ushort MaxQueueSize => 256;
        public ulong DeviceFeatures => 0;
        public void ReadConfig(uint offset, Span<byte> data) => data.Clear();
        public void WriteConfig(uint offset, ReadOnlySpan<byte> data) { }
        public void Activate(ulong negotiatedFeatures) { }
        public void Reset() { }
        public byte[] SaveState() => [];
        public void RestoreState(ReadOnlySpan<byte> state) { }

        public void ProcessQueue(VirtqueueContext queue)
        {
            while (queue.TryNext(out var chain))
            {
                int read = chain.CopyFromReadable(queue.Memory, 0, _buffer);
                int written = chain.CopyToWritable(queue.Memory, 0, _buffer.AsSpan(0, Math.Max(read, (int)Math.Min(chain.WritableLength, (ulong)_buffer.Length))));
                queue.Complete((uint)written);
            }
        }
    }

    /// <summary>A disk in a byte array.</summary>
    private sealed class ArrayBackend(int bytes, bool readOnly) : IBlockBackend
    {
        private readonly byte[] _data = new byte[bytes];

        public ulong SizeBytes => (ulong)_data.Length;
        public bool IsReadOnly => readOnly;

        public void Read(ulong offset, Span<byte> destination) => _data.AsSpan(checked((int)offset), destination.Length).CopyTo(destination);

        public void Write(ulong offset, ReadOnlySpan<byte> source)
        {
            if (readOnly) throw new InvalidOperationException("the device wrote to a read-only disk");
            source.CopyTo(_data.AsSpan(checked((int)offset)));
        }

        public void Flush() { }

        public void Dispose() { }
    }
}
