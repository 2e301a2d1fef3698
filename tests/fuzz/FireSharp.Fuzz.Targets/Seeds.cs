using System.Buffers.Binary;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using Google.Protobuf;

namespace FireSharp.Fuzz;

/// <summary>
/// The seed corpus: a few small valid inputs per target, the starting points for the fuzzer's mutations.
/// <c>FireSharp.Fuzz seed tests/fuzz/corpus</c> writes them; the committed files are its output.
/// </summary>
public static class Seeds
{
    private const ushort Next = Virtqueue.DescFlagNext, Write = Virtqueue.DescFlagWrite, Indirect = Virtqueue.DescFlagIndirect;

    public static IEnumerable<(string Target, string Name, byte[] Bytes)> All()
    {
        foreach (var (n, b) in VirtqueueSeeds()) yield return ("virtqueue", n, b);
        foreach (var (n, b) in BlockSeeds()) yield return ("virtio-blk", n, b);
        foreach (var (n, b) in NetSeeds()) yield return ("virtio-net", n, b);
        foreach (var (n, b) in VsockSeeds()) yield return ("vsock", n, b);
        foreach (var (n, b) in SnapshotSeeds()) yield return ("snapshot-state", n, b);
        yield return ("elf", "linux-entry", Elf(pvhEntry: null));
        yield return ("elf", "pvh-note", Elf(pvhEntry: 0x10_0000));
        yield return ("pvh", "pvh-note", Elf(pvhEntry: 0x10_0000));
        yield return ("pvh", "pvh-note64", Elf(pvhEntry: 0x10_0010, note64: true));
        yield return ("bzimage", "protocol-2.15", BzImage(0x020f));
        yield return ("bzimage", "protocol-2.12", BzImage(0x020c));
        foreach (var (n, b) in FramingSeeds()) yield return ("worker-framing", n, b);
        foreach (var (n, b) in AgentSeeds()) yield return ("agent-framing", n, b);
        foreach (var (n, b) in CreateVmSeeds()) yield return ("create-vm", n, b);
    }

    private static IEnumerable<(string, byte[])> VirtqueueSeeds()
    {
        var b = new QueueImageBuilder();
        ulong a = b.Data(new byte[64]), c = b.Data(new byte[64]);
        yield return ("chain", b.Block(0, [(a, 64, Next, 1), (c, 64, Write, 0)], 0).Build());

        b = new QueueImageBuilder(indirect: true);
        a = b.Data(new byte[32]);
        c = b.Data(new byte[32]);
        var table = new byte[32];
        WriteDesc(table, a, 32, Next, 1);
        WriteDesc(table.AsSpan(16), c, 32, Write, 0);
        ulong t = b.Data(table);
        yield return ("indirect", b.Block(0, [(t, 32, Indirect, 0)], 0).Build());

        b = new QueueImageBuilder(sizeLog2: 3, eventIdx: true);
        a = b.Data(new byte[16]);
        yield return ("event-idx", b.Block(0, [(a, 16, Write, 0), (a, 16, 0, 0)], 0, 1).Build());
    }

    private static IEnumerable<(string, byte[])> BlockSeeds()
    {
        foreach (var (name, type, len) in new[] { ("in", VirtioBlock.RequestIn, 512u), ("out", VirtioBlock.RequestOut, 1024u),
                     ("flush", VirtioBlock.RequestFlush, 0u), ("get-id", VirtioBlock.RequestGetId, 20u) })
        {
            var b = new QueueImageBuilder();
            var header = new byte[16];
            BinaryPrimitives.WriteUInt32LittleEndian(header, type);
            BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), 1);
            ulong h = b.Data(header), d = QueueImageBuilder.Scratch(0), s = QueueImageBuilder.Scratch(1);
            ushort dataFlags = (ushort)(Next | (type == VirtioBlock.RequestOut ? 0 : Write));
            var descs = len == 0
                ? new[] { (h, 16u, Next, (ushort)1), (s, 1u, Write, (ushort)0) }
                : [(h, 16u, Next, (ushort)1), (d, len, dataFlags, (ushort)2), (s, 1u, Write, (ushort)0)];
            yield return (name, b.Block(0, descs, 0).Build());
        }
    }

    private static IEnumerable<(string, byte[])> NetSeeds()
    {
        // virtio_net_hdr (12 bytes with VERSION_1) and a 60-byte Ethernet frame.
        var frame = new byte[12 + 60];
        frame.AsSpan(12, 6).Fill(0xff);
        frame[24] = 0x08;
        var b = new QueueImageBuilder();
        ulong f = b.Data(frame);
        yield return ("tx", b.Block(1, [(f, (uint)frame.Length, 0, 0)], 0).Build());

        var csum = (byte[])frame.Clone();
        csum[0] = 1; // NEEDS_CSUM
        BinaryPrimitives.WriteUInt16LittleEndian(csum.AsSpan(6), 34);
        BinaryPrimitives.WriteUInt16LittleEndian(csum.AsSpan(8), 16);
        b = new QueueImageBuilder();
        ulong h = b.Data(csum.AsSpan(0, 12)), p = b.Data(csum.AsSpan(12));
        yield return ("tx-split-csum", b.Block(1, [(h, 12, Next, 1), (p, 60, 0, 0)], 0).Build());

        b = new QueueImageBuilder();
        ulong rx = QueueImageBuilder.Scratch(0);
        f = b.Data(frame);
        yield return ("rx-and-tx", b.Block(0, [(rx, 2048, Write, 0)], 0).Block(1, [(f, (uint)frame.Length, 0, 0)], 0).Build());
    }

    private static IEnumerable<(string, byte[])> VsockSeeds()
    {
        byte[] Packet(ushort op, uint len = 0, uint flags = 0)
        {
            var pkt = new byte[VsockHeader.Size + len];
            new VsockHeader(42, VsockProtocol.HostCid, 1000, 52, len, VsockProtocol.TypeStream, op, flags, 65536, 0).Write(pkt);
            return pkt;
        }
        foreach (var (name, packets) in new[]
                 {
                     ("request", new[] { Packet(VsockProtocol.OpRequest) }),
                     ("request-rw-shutdown", new[] { Packet(VsockProtocol.OpRequest), Packet(VsockProtocol.OpRw, 16), Packet(VsockProtocol.OpShutdown, 0, 3) }),
                     ("credit-rst", new[] { Packet(VsockProtocol.OpCreditRequest), Packet(VsockProtocol.OpCreditUpdate), Packet(VsockProtocol.OpRst) }),
                 })
        {
            var b = new QueueImageBuilder();
            var rx = Enumerable.Range(0, 4).Select(QueueImageBuilder.Scratch).ToArray();
            ulong ev = QueueImageBuilder.Scratch(4);
            var tx = packets.Select(p => (b.Data(p), (uint)p.Length)).ToArray();
            b.Block(0, [.. rx.Select(a => (a, (uint)(VsockHeader.Size + 4096), Write, (ushort)0))], 0, 1, 2, 3);
            b.Block(2, [(ev, 8, Write, 0)], 0);
            b.Block(1, [.. tx.Select(x => (x.Item1, x.Item2, (ushort)0, (ushort)0))], [.. Enumerable.Range(0, tx.Length).Select(i => (ushort)i)]);
            yield return (name, b.Build());
        }
    }

    private static IEnumerable<(string, byte[])> SnapshotSeeds()
    {
        var state = new SnapshotState
        {
            Config = new MachineConfig
            {
                MemoryBytes = 128UL << 20,
                VcpuCount = 1,
                KernelPath = "/var/lib/firesharp/vmlinux",
                Devices =
                [
                    new FireSharp.Devices.DeviceDescriptor("com1", "serial16550"),
                    new FireSharp.Devices.DeviceDescriptor("rootfs", "virtio-blk") { Settings = new Dictionary<string, string> { ["path"] = "/r.ext4", ["readOnly"] = "true" } },
                ],
            },
            Vm = new VmKernelState(),
            Vcpus = [new VcpuState { Id = 0, Cpuid = [default], Regs = default, Sregs = default, Fpu = default, Msrs = [new() { index = 0x10, data = 1 }], Events = default, MpState = 0 }],
            DeviceStates = new Dictionary<string, byte[]> { ["com1"] = [1, 2, 3], ["rootfs"] = [4, 5] },
            CreatedAt = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000),
        };
        var file = SnapshotFormat.Encode(state);
        yield return ("content", [0, .. file.AsSpan(SnapshotFormat.HeaderLength)]);
        yield return ("file", [1, .. file]);
    }

    private static IEnumerable<(string, byte[])> FramingSeeds()
    {
        var request = new WorkerRequest { Status = new Proto.Worker.Empty() };
        yield return ("request", [0, .. Frames(request, request)]);
        var message = new WorkerMessage { Status = new WorkerStatus { State = MachineState.Running } };
        yield return ("message", [1, .. Frames(message)]);
    }

    private static IEnumerable<(string, byte[])> AgentSeeds()
    {
        var hello = new Proto.Agent.Request { Id = 1, Hello = new Proto.Agent.Hello { ProtocolVersion = Agent.Protocol.AgentProtocol.Version } };
        var exec = new Proto.Agent.Request { Id = 2, Exec = new Proto.Agent.ExecRequest { Argv = { "/bin/true" } } };
        yield return ("hello-exec", [3, .. Frames(hello, exec)]);
        var reply = new Proto.Agent.Response { Id = 1, Hello = new Proto.Agent.HelloReply { ProtocolVersion = 2 } };
        yield return ("reply", [0, .. Frames(reply)]);
    }

    private static IEnumerable<(string, byte[])> CreateVmSeeds()
    {
        var spec = new VmSpec
        {
            Machine = new MachineSpec { Vcpus = 1, MemMib = 128 },
            Kernel = new KernelSpec { Path = "/bin/sh", Cmdline = "console=ttyS0" },
        };
        yield return ("minimal", new CreateVmRequest { Id = "vm-1", Spec = spec }.ToByteArray());
        var full = spec.Clone();
        full.Drives.Add(new Proto.V1.DriveSpec { Id = "rootfs", Path = "/bin/sh", ReadOnly = true, Root = true });
        full.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "eth0", Tap = "tap0", Mac = "02:fc:00:00:00:01" });
        full.Vsock = new VsockSpec { GuestCid = 3 };
        yield return ("full", new CreateVmRequest { Id = "vm-2", Spec = full, Labels = { ["app"] = "web" } }.ToByteArray());
    }

    private static byte[] Frames(params IMessage[] messages) =>
        [.. messages.SelectMany(m => FireSharp.Framing.Frames.Encode(m, 1 << 20))];

    private static void WriteDesc(Span<byte> d, ulong addr, uint len, ushort flags, ushort next)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    /// <summary>A small x86_64 ET_EXEC: one PT_LOAD of 64 bytes at 1 MiB (entry there), and optionally a Xen PVH entry note.</summary>
    private static byte[] Elf(ulong? pvhEntry, bool note64 = false)
    {
        byte[] note = [];
        if (pvhEntry is { } entry)
        {
            int descBytes = note64 ? 8 : 4;
            note = new byte[12 + 4 + descBytes];
            BinaryPrimitives.WriteUInt32LittleEndian(note, 4);
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(4), (uint)descBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(8), 18);
            "Xen\0"u8.CopyTo(note.AsSpan(12));
            if (note64) BinaryPrimitives.WriteUInt64LittleEndian(note.AsSpan(16), entry);
            else BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(16), (uint)entry);
        }
        int phnum = note.Length > 0 ? 2 : 1;
        int loadOff = 64 + 56 * phnum, noteOff = loadOff + 64;
        var f = new byte[noteOff + note.Length];
        var s = f.AsSpan();
        s[0] = 0x7f; "ELF"u8.CopyTo(s[1..]); s[4] = 2; s[5] = 1; s[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x10..], 2);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x12..], 62);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x14..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x18..], 0x10_0000);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x20..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x34..], 64);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x36..], 56);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x38..], (ushort)phnum);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x3a..], 64);
        // Without a PVH note, a Linux vmlinux: linked at __START_KERNEL_map + the physical address.
        ulong vaddr = note.Length > 0 ? 0x10_0000 : 0xffff_ffff_8010_0000;
        ProgramHeader(s[64..], 1, (ulong)loadOff, 0x10_0000, vaddr, 64, 0x2000);
        if (note.Length > 0) ProgramHeader(s[120..], 4, (ulong)noteOff, 0, 0, (ulong)note.Length, (ulong)note.Length);
        note.CopyTo(s[noteOff..]);
        return f;
    }

    private static void ProgramHeader(Span<byte> p, uint type, ulong offset, ulong paddr, ulong vaddr, ulong fileSize, ulong memSize)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(p, type);
        BinaryPrimitives.WriteUInt32LittleEndian(p[4..], 7);
        BinaryPrimitives.WriteUInt64LittleEndian(p[8..], offset);
        BinaryPrimitives.WriteUInt64LittleEndian(p[16..], vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[24..], paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(p[32..], fileSize);
        BinaryPrimitives.WriteUInt64LittleEndian(p[40..], memSize);
        BinaryPrimitives.WriteUInt64LittleEndian(p[48..], 16);
    }

    /// <summary>A bzImage: 4 setup sectors after the boot sector, a 1 KiB protected-mode kernel, a 64-bit capable setup header.</summary>
    private static byte[] BzImage(ushort version)
    {
        var f = new byte[5 * 512 + 1024];
        var s = f.AsSpan();
        s[0x1f1] = 4;
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x1f4..], 1024 / 16);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x1fe..], 0xaa55);
        s[0x200] = 0xeb; // jmp over the setup header, which so ends at 0x26c
        s[0x201] = 0x6a;
        "HdrS"u8.CopyTo(s[0x202..]);
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x206..], version);
        s[0x211] = 1;
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x214..], 0x10_0000);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x22c..], 0x7fff_ffff);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x230..], 0x20_0000);
        s[0x234] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(s[0x236..], 3);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x238..], 2047);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x258..], 0x100_0000);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x260..], 0x10_0000);
        return f;
    }
}
