using System.Buffers.Binary;
using System.Net.Sockets;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>
/// A virtio-net device over a <see cref="SocketPairBackend"/> behind a real transport, and a fake guest driver
/// that owns the receive and transmit queues (16 entries each) in 8 MiB of guest memory. The test is the network:
/// it writes frames into <see cref="Peer"/> and reads what the guest transmitted from it. The event loop does
/// not run on a thread: <see cref="Pump"/> turns it until it is idle, so every test is deterministic.
/// </summary>
internal sealed class NetRig : IDisposable
{
    public const ushort QSize = 16;
    public const uint BigBuffer = NetProtocol.MaxFrameSize;
    public const ulong RxData = 0x100000, TxData = 0x300000, Slot = 0x11000, MemoryBytes = 8 * 1024 * 1024;
    public static readonly byte[] DefaultMac = [0x02, 0xfc, 1, 2, 3, 4];

    private readonly Queue<int>[] _free = [new(), new()];
    private readonly SplitQueueDriver _queues;
    private readonly Dictionary<int, int[]>[] _chains = [[], []];

    public NetRig(NetOffloads backendOffloads = NetOffloads.None, ulong? driverFeatures = null, bool bringup = true,
        FireSharp.Devices.RateLimiting.RateLimiter? rx = null, FireSharp.Devices.RateLimiting.RateLimiter? tx = null)
    {
        Memory = GuestMemory.CreateAnonymous(MemoryBytes);
        _queues = new SplitQueueDriver(Memory, 2, QSize);
        (Backend, Peer) = SocketPairBackend.Create(backendOffloads);
        Peer.ReceiveTimeout = 2000;
        Device = new VirtioNet("test", Backend, DefaultMac, Logger, QSize, rx, tx);
        Transport = new VirtioMmioTransport(Device, Memory, Irq, Logger) { QueueNotifyHandler = Device.Notify };
        Device.Attach(Transport);
        for (int q = 0; q < 2; q++)
            for (int i = 0; i < QSize; i++) _free[q].Enqueue(i);
        if (bringup) Bringup(driverFeatures ?? (VirtioFeatures.Transport | Device.DeviceFeatures));
    }

    public GuestMemory Memory { get; }
    public SocketPairBackend Backend { get; }
    public Socket Peer { get; }
    public VirtioNet Device { get; }
    public VirtioMmioTransport Transport { get; }
    public ListLogger Logger { get; } = new();
    public Tests.Devices.FakeInterruptLine Irq { get; } = new();

    public static ulong Desc(int q) => SplitQueueDriver.Desc(q);
    public static ulong Used(int q) => SplitQueueDriver.Used(q);

    public void Bringup(ulong features)
    {
        Mmio.W32(Transport, VirtioMmioRegister.Status, 0);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver);
        Mmio.SetFeatures(Transport, features);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk);
        _queues.SetupQueues(Transport);
        Mmio.W32(Transport, VirtioMmioRegister.Status,
            VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk | VirtioStatus.DriverOk);
        Pump();
    }

    public void SetDesc(int q, int index, ulong addr, uint len, ushort flags, ushort next) => _queues.SetDesc(q, index, addr, len, flags, next);

    public void Publish(int q, int head) => _queues.Publish(q, head);

    public List<(int Head, uint Len)> TakeUsed(int q) => _queues.TakeUsed(q);

    /// <summary>Gives the device <paramref name="count"/> receive chains of <paramref name="bytes"/> each, in <paramref name="pieces"/> descriptors.</summary>
    public void AddRxBuffers(int count, uint bytes = BigBuffer, int pieces = 1)
    {
        for (int i = 0; i < count; i++)
        {
            var descs = Enumerable.Range(0, pieces).Select(_ => _free[0].Dequeue()).ToArray();
            ulong baseAddr = RxData + (ulong)descs[0] * Slot;
            uint per = bytes / (uint)pieces;
            ulong at = baseAddr;
            for (int p = 0; p < pieces; p++)
            {
                uint len = p == pieces - 1 ? bytes - per * (uint)(pieces - 1) : per;
                bool last = p == pieces - 1;
                // Pieces of one buffer are consecutive in the slot of the chain's head (Slot >= 65562).
                SetDesc(0, descs[p], at, len, (ushort)(Virtqueue.DescFlagWrite | (last ? 0 : Virtqueue.DescFlagNext)), last ? (ushort)0 : (ushort)descs[p + 1]);
                at += len;
            }
            _chains[0][descs[0]] = descs;
            Publish(0, descs[0]);
        }
        Mmio.Notify(Transport, 0);
        Pump();
    }

    /// <summary>What the device delivered since the last call: each receive chain's bytes (header included); buffers not re-added.</summary>
    public List<byte[]> TakeRx()
    {
        Pump();
        var frames = new List<byte[]>();
        foreach (var (head, len) in TakeUsed(0))
        {
            var bytes = new byte[len];
            Memory.Read(RxData + (ulong)head * Slot, bytes);
            frames.Add(bytes);
            foreach (var d in _chains[0][head]) _free[0].Enqueue(d);
            _chains[0].Remove(head);
        }
        return frames;
    }

    /// <summary>The guest transmits <paramref name="frame"/> (header included) as one chain of <paramref name="pieces"/> descriptors.</summary>
    public (int Head, uint Len) Transmit(ReadOnlySpan<byte> frame, int pieces = 1) => Assert.Single(TransmitAll(frame, pieces));

    /// <summary>Like <see cref="Transmit"/>, but returns every chain the device returned (none while throttled).</summary>
    public List<(int Head, uint Len)> TransmitAll(ReadOnlySpan<byte> frame, int pieces = 1)
    {
        var descs = Enumerable.Range(0, pieces).Select(_ => _free[1].Dequeue()).ToArray();
        ulong at = TxData + (ulong)descs[0] * Slot;
        int per = frame.Length / pieces, done = 0;
        for (int p = 0; p < pieces; p++)
        {
            int len = p == pieces - 1 ? frame.Length - done : per;
            bool last = p == pieces - 1;
            Memory.Write(at, frame.Slice(done, len));
            SetDesc(1, descs[p], at, (uint)len, last ? (ushort)0 : Virtqueue.DescFlagNext, last ? (ushort)0 : (ushort)descs[p + 1]);
            at += (ulong)len;
            done += len;
        }
        _chains[1][descs[0]] = descs;
        Publish(1, descs[0]);
        Mmio.Notify(Transport, 1);
        return TakeTransmitted();
    }

    /// <summary>Runs the device and takes back the transmit chains it returned.</summary>
    public List<(int Head, uint Len)> TakeTransmitted()
    {
        Pump();
        var used = TakeUsed(1);
        foreach (var (head, _) in used)
        {
            foreach (var d in _chains[1][head]) _free[1].Enqueue(d);
            _chains[1].Remove(head);
        }
        return used;
    }

    /// <summary>Turns the device's event loop until nothing is left to do.</summary>
    public void Pump()
    {
        int idle = 0;
        for (int i = 0; i < 10_000 && idle < 3; i++) idle = Device.RunOnce(0) == 0 ? idle + 1 : 0;
    }

    /// <summary>The network sends a frame to the guest.</summary>
    public void Inject(byte[] frame)
    {
        Peer.Send(frame);
        Pump();
    }

    /// <summary>The next frame the guest transmitted, or null when none arrives.</summary>
    public byte[]? ReceiveFromGuest()
    {
        if (!Peer.Poll(TimeSpan.FromMilliseconds(200), SelectMode.SelectRead)) return null;
        var buf = new byte[NetProtocol.MaxFrameSize + 100];
        int n = Peer.Receive(buf);
        return buf[..n];
    }

    /// <summary>A frame with a virtio-net header (flags/gso as given, num_buffers 0) and a recognisable Ethernet packet.</summary>
    public static byte[] Frame(int packetBytes, int seed, byte flags = 0, byte gso = 0, ushort csumStart = 0, ushort csumOffset = 0)
    {
        var f = new byte[NetProtocol.HeaderSize + packetBytes];
        f[0] = flags;
        f[1] = gso;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(6), csumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(8), csumOffset);
        var rnd = new Random(seed);
        rnd.NextBytes(f.AsSpan(NetProtocol.HeaderSize));
        return f;
    }

    public void Dispose()
    {
        Device.Dispose();
        Peer.Dispose();
        Memory.Dispose();
    }
}
