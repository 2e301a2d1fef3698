using System.Net.Sockets;
using System.Text;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio.Vsock;

/// <summary>A packet as the fake guest driver sees it on the rx queue.</summary>
internal sealed record RxPacket(VsockHeader Header, byte[] Payload)
{
    public ushort Op => Header.Op;
}

/// <summary>
/// A virtio-vsock device behind a real transport and a fake guest driver that owns three split queues
/// (rx, tx, event: 64 entries each) in 8 MiB of guest memory. The event loop does not run on its own thread:
/// <see cref="Pump"/> turns it until it is idle, so every test is deterministic.
/// </summary>
internal sealed class VsockRig : IDisposable
{
    public const ushort QSize = 64;
    public const ulong Cid = 42;
    public const uint RxBufBytes = 4096 + VsockHeader.Size;
    private const ulong RxData = 0x100000, RxSlot = 0x2000, TxData = 0x200000, TxSlot = 0x11000, EvData = 0x700000;

    private readonly Queue<int>[] _free = [new(), new(), new()];
    private readonly SplitQueueDriver _queues;
    private readonly string _dir;

    public VsockRig(int maxConnections = VirtioVsock.DefaultMaxConnections, int rxBuffers = 32, uint rxBufBytes = RxBufBytes, TimeSpan? connectTimeout = null,
        long bufferBudget = VirtioVsock.DefaultBufferBudget)
    {
        _dir = Path.Combine("/tmp", "fsvs-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
        UdsPath = Path.Combine(_dir, "v.sock");
        Memory = GuestMemory.CreateAnonymous(8 * 1024 * 1024);
        _queues = new SplitQueueDriver(Memory, 3, QSize);
        Device = new VirtioVsock(new VsockDeviceSpec(Cid, UdsPath), Logger, maxConnections, connectTimeout: connectTimeout, bufferBudget: bufferBudget);
        Transport = new VirtioMmioTransport(Device, Memory, Irq, Logger) { QueueNotifyHandler = Device.Notify };
        Device.Attach(Transport);
        for (int q = 0; q < 3; q++)
            for (int i = 0; i < QSize; i++) _free[q].Enqueue(i);
        RxBufferBytes = rxBufBytes;

        Mmio.W32(Transport, VirtioMmioRegister.Status, 0);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver);
        Mmio.SetFeatures(Transport, VirtioFeatures.Transport);
        Mmio.W32(Transport, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk);
        _queues.SetupQueues(Transport);
        Mmio.W32(Transport, VirtioMmioRegister.Status,
            VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk | VirtioStatus.DriverOk);
        AddRxBuffers(rxBuffers);
        for (int i = 0; i < 4; i++) AddEventBuffer();
        Pump();
    }

    public string UdsPath { get; }
    public string Dir => _dir;
    public GuestMemory Memory { get; }
    public VirtioVsock Device { get; }
    public VirtioMmioTransport Transport { get; }
    public ListLogger Logger { get; } = new();
    public Tests.Devices.FakeInterruptLine Irq { get; } = new();
    public uint RxBufferBytes { get; set; }

    /// <summary>Guest receive buffer and consumed count the fake guest reports in its headers.</summary>
    public uint GuestBufAlloc { get; set; } = 64 * 1024;
    public Dictionary<(uint GuestPort, uint HostPort), uint> GuestFwdCnt { get; } = [];

    private void SetDesc(int q, int index, ulong addr, uint len, ushort flags, ushort next) => _queues.SetDesc(q, index, addr, len, flags, next);

    private void Publish(int q, int head) => _queues.Publish(q, head);

    private List<(int Head, uint Len)> TakeUsed(int q) => _queues.TakeUsed(q);

    public void AddRxBuffers(int count, uint? bytes = null)
    {
        for (int i = 0; i < count; i++)
        {
            int d = _free[0].Dequeue();
            SetDesc(0, d, RxData + (ulong)d * RxSlot, bytes ?? RxBufferBytes, Virtqueue.DescFlagWrite, 0);
            Publish(0, d);
        }
        Mmio.Notify(Transport, 0);
    }

    private void AddEventBuffer()
    {
        int d = _free[2].Dequeue();
        SetDesc(2, d, EvData + (ulong)d * 16, 8, Virtqueue.DescFlagWrite, 0);
        Publish(2, d);
        Mmio.Notify(Transport, 2);
    }

    /// <summary>Turns the device's event loop until nothing is left to do.</summary>
    public void Pump()
    {
        int idle = 0;
        for (int i = 0; i < 10_000 && idle < 3; i++) idle = Device.RunOnce(0) == 0 ? idle + 1 : 0;
    }

    /// <summary>Everything the device put on rx since the last call; each buffer is given back (refilled) at once.</summary>
    public List<RxPacket> ReadRx(bool refill = true)
    {
        Pump();
        var packets = new List<RxPacket>();
        var used = TakeUsed(0).ToList();
        foreach (var (head, len) in used)
        {
            ulong addr = RxData + (ulong)head * RxSlot;
            Assert.True(len >= VsockHeader.Size, $"rx used length {len} is shorter than a header");
            var raw = new byte[len];
            Memory.Read(addr, raw);
            var h = VsockHeader.Read(raw);
            Assert.Equal((ulong)(VsockHeader.Size + h.Len), (ulong)len);
            packets.Add(new RxPacket(h, raw[VsockHeader.Size..]));
            _free[0].Enqueue(head);
            if (h.Op == VsockProtocol.OpRw)
            {
                var key = (h.DstPort, h.SrcPort);
                GuestFwdCnt[key] = GuestFwdCnt.GetValueOrDefault(key) + h.Len;
            }
        }
        if (refill && used.Count > 0)
        {
            AddRxBuffers(used.Count);
            Pump();
        }
        return packets;
    }

    /// <summary>The used lengths of rx buffers returned since the last read, without parsing (buffers not refilled).</summary>
    public List<uint> TakeRxLengths()
    {
        Pump();
        var lengths = new List<uint>();
        foreach (var (head, len) in TakeUsed(0).ToList())
        {
            lengths.Add(len);
            _free[0].Enqueue(head);
        }
        return lengths;
    }

    /// <summary>Event ids the device wrote to the event queue.</summary>
    public List<uint> ReadEvents()
    {
        Pump();
        var ids = new List<uint>();
        foreach (var (head, len) in TakeUsed(2).ToList())
        {
            Assert.Equal(4u, len);
            ids.Add(Memory.Read<uint>(EvData + (ulong)head * 16));
            _free[2].Enqueue(head);
        }
        return ids;
    }

    /// <summary>Sends raw bytes as one tx chain (one or two descriptors), as a guest driver would, and pumps.</summary>
    public void SendRaw(ReadOnlySpan<byte> bytes, int splitAt = -1)
    {
        foreach (var (head, _) in TakeUsed(1).ToList()) FreeTx(head);
        if (splitAt < 0)
        {
            int d = _free[1].Dequeue();
            ulong addr = TxData + (ulong)d * TxSlot;
            Memory.Write(addr, bytes);
            SetDesc(1, d, addr, (uint)bytes.Length, 0, 0);
            _txChains[d] = [d];
            Publish(1, d);
        }
        else
        {
            int d0 = _free[1].Dequeue(), d1 = _free[1].Dequeue();
            ulong a0 = TxData + (ulong)d0 * TxSlot, a1 = TxData + (ulong)d1 * TxSlot;
            Memory.Write(a0, bytes[..splitAt]);
            Memory.Write(a1, bytes[splitAt..]);
            SetDesc(1, d0, a0, (uint)splitAt, Virtqueue.DescFlagNext, (ushort)d1);
            SetDesc(1, d1, a1, (uint)(bytes.Length - splitAt), 0, 0);
            _txChains[d0] = [d0, d1];
            Publish(1, d0);
        }
        Mmio.Notify(Transport, 1);
        Pump();
    }

    private readonly Dictionary<int, int[]> _txChains = [];

    private void FreeTx(int head)
    {
        foreach (var d in _txChains[head]) _free[1].Enqueue(d);
        _txChains.Remove(head);
    }

    /// <summary>Sends a packet from the guest (src = <see cref="Cid"/>, dst = host) with the guest's credit fields.</summary>
    public void Send(ushort op, uint guestPort, uint hostPort, ReadOnlySpan<byte> payload = default, uint flags = 0,
        uint? len = null, ushort type = VsockProtocol.TypeStream, ulong srcCid = Cid, ulong dstCid = VsockProtocol.HostCid, int splitAt = -1)
    {
        var raw = new byte[VsockHeader.Size + payload.Length];
        new VsockHeader(srcCid, dstCid, guestPort, hostPort, len ?? (uint)payload.Length, type, op, flags, GuestBufAlloc,
            GuestFwdCnt.GetValueOrDefault((guestPort, hostPort))).Write(raw);
        payload.CopyTo(raw.AsSpan(VsockHeader.Size));
        SendRaw(raw, splitAt);
    }

    public static Socket ConnectClient(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 5000, SendTimeout = 5000 };
        s.Connect(new UnixDomainSocketEndPoint(path));
        return s;
    }

    public static Socket Listen(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.Listen(2048);
        return s;
    }

    /// <summary>Reads one line (up to '\n') byte by byte, so nothing after it is consumed.</summary>
    public static string ReadLine(Socket s)
    {
        var sb = new StringBuilder();
        var one = new byte[1];
        while (s.Receive(one) == 1 && one[0] != '\n') sb.Append((char)one[0]);
        return sb.ToString();
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes (fails the test on EOF).</summary>
    public static byte[] ReadExactly(Socket s, int count)
    {
        var buf = new byte[count];
        int got = 0;
        while (got < count)
        {
            int n = s.Receive(buf, got, count - got, SocketFlags.None);
            Assert.True(n > 0, $"EOF after {got} of {count} bytes");
            got += n;
        }
        return buf;
    }

    /// <summary>True when the peer closed the socket (EOF or reset) within the receive timeout.</summary>
    public static bool IsClosed(Socket s)
    {
        try
        {
            var buf = new byte[256];
            while (true)
            {
                int n = s.Receive(buf);
                if (n == 0) return true;
            }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset) { return true; }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut) { return false; }
    }

    /// <summary>
    /// A host-initiated connection to guest port <paramref name="guestPort"/> taken through the whole handshake:
    /// CONNECT line, REQUEST seen by the guest, RESPONSE, OK line. Returns the client and the host-side port.
    /// </summary>
    public (Socket Client, uint HostPort) OpenHostConnection(uint guestPort = 52)
    {
        var client = ConnectClient(UdsPath);
        client.Send(Encoding.ASCII.GetBytes($"CONNECT {guestPort}\n"));
        var rx = ReadRx();
        var req = Assert.Single(rx, p => p.Op == VsockProtocol.OpRequest);
        Assert.Equal(guestPort, req.Header.DstPort);
        Send(VsockProtocol.OpResponse, guestPort, req.Header.SrcPort);
        Assert.Equal($"OK {req.Header.SrcPort}", ReadLine(client));
        return (client, req.Header.SrcPort);
    }

    public void Dispose()
    {
        Device.Dispose();
        Memory.Dispose();
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }
}
