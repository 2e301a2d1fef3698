using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using FireSharp.Devices;
using FireSharp.Kvm.Interop;

namespace FireSharp.Snapshot;

/// <summary>
/// The state file: a 32-byte header, then the content.
/// <code>
///   0  magic "FIRESNAP"           8 bytes
///   8  format version (u32)       = <see cref="Version"/>
///  12  header length (u32)        = 32
///  16  content length (u64)
///  24  CRC-64/ECMA-182 (u64) of the content (System.IO.Hashing.Crc64)
///  32  content
/// </code>
/// All integers little-endian. The content is a sequence of fields written with <see cref="BinaryWriter"/>:
/// the machine config, the VM's kernel state, each vCPU, then each device's state. KVM structs are stored
/// as length-prefixed raw bytes (the kernel ABI, x86_64), and a length that is not the struct's size is
/// rejected. The reader checks header, length and CRC before parsing, and every count against the bytes
/// that remain, so a damaged file is an error, never a huge allocation or a half-read state.
/// </summary>
public static class SnapshotFormat
{
    public const uint Version = 1;
    public const int HeaderLength = 32;
    public static ReadOnlySpan<byte> Magic => "FIRESNAP"u8;

    public static byte[] Encode(SnapshotState state)
    {
        var content = new MemoryStream(64 * 1024);
        using (var w = new BinaryWriter(content, Encoding.UTF8, leaveOpen: true))
        {
            WriteConfig(w, state.Config);
            w.Write(state.CreatedAt.ToUnixTimeMilliseconds());
            WriteStruct(w, state.Vm.PicMaster);
            WriteStruct(w, state.Vm.PicSlave);
            WriteStruct(w, state.Vm.Ioapic);
            WriteStruct(w, state.Vm.Pit);
            WriteStruct(w, state.Vm.Clock);
            w.Write(state.Vcpus.Count);
            foreach (var v in state.Vcpus) WriteVcpu(w, v);
            w.Write(state.DeviceStates.Count);
            foreach (var (id, bytes) in state.DeviceStates.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                w.Write(id);
                w.Write(bytes.Length);
                w.Write(bytes);
            }
        }
        var body = content.GetBuffer().AsSpan(0, (int)content.Length);
        var file = new byte[HeaderLength + body.Length];
        Magic.CopyTo(file);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8), Version);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(12), HeaderLength);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(16), (ulong)body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(24), Crc64.HashToUInt64(body));
        body.CopyTo(file.AsSpan(HeaderLength));
        return file;
    }

    /// <summary>Validates and parses a state file's bytes. <paramref name="path"/> only names the file in errors.</summary>
    public static SnapshotState Decode(ReadOnlySpan<byte> file, string path)
    {
        if (file.Length < HeaderLength)
        {
            if (file.Length < Magic.Length ? Magic.StartsWith(file) : file.StartsWith(Magic))
                throw new SnapshotException(SnapshotErrorReason.Truncated, $"{path}: truncated: {file.Length} bytes, shorter than the {HeaderLength}-byte header");
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: not a FireSharp snapshot state file (bad magic)");
        }
        if (!file.StartsWith(Magic))
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: not a FireSharp snapshot state file (bad magic)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(file[8..]);
        if (version != Version)
            throw new SnapshotException(SnapshotErrorReason.UnsupportedVersion, $"{path}: snapshot format version {version}; this FireSharp reads version {Version}");
        uint headerLength = BinaryPrimitives.ReadUInt32LittleEndian(file[12..]);
        if (headerLength != HeaderLength)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: header length {headerLength}, expected {HeaderLength}");
        ulong contentLength = BinaryPrimitives.ReadUInt64LittleEndian(file[16..]);
        ulong actual = (ulong)(file.Length - HeaderLength);
        if (contentLength > actual)
            throw new SnapshotException(SnapshotErrorReason.Truncated, $"{path}: truncated: the header announces {contentLength} content bytes, the file has {actual}");
        if (contentLength < actual)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: {actual - contentLength} unexpected bytes after the content");
        var body = file[HeaderLength..];
        ulong crc = BinaryPrimitives.ReadUInt64LittleEndian(file[24..]);
        ulong computed = Crc64.HashToUInt64(body);
        if (crc != computed)
            throw new SnapshotException(SnapshotErrorReason.ChecksumMismatch, $"{path}: CRC-64 mismatch (file says 0x{crc:x16}, content is 0x{computed:x16}): the state file is damaged");

        try
        {
            using var r = new BinaryReader(new MemoryStream(body.ToArray(), writable: false), Encoding.UTF8);
            var config = ReadConfig(r);
            long created = r.ReadInt64();
            var vm = new VmKernelState
            {
                PicMaster = ReadStruct<kvm_irqchip>(r),
                PicSlave = ReadStruct<kvm_irqchip>(r),
                Ioapic = ReadStruct<kvm_irqchip>(r),
                Pit = ReadStruct<kvm_pit_state2>(r),
                Clock = ReadStruct<kvm_clock_data>(r),
            };
            int vcpuCount = ReadCount(r, 1, "vCPU");
            if (vcpuCount != config.VcpuCount) throw new InvalidDataException($"{vcpuCount} vCPU states for {config.VcpuCount} vCPUs");
            var vcpus = new VcpuState[vcpuCount];
            for (int i = 0; i < vcpuCount; i++)
            {
                vcpus[i] = ReadVcpu(r);
                if (vcpus[i].Id != i) throw new InvalidDataException($"vCPU state {i} has id {vcpus[i].Id}");
            }
            int deviceCount = ReadCount(r, 5, "device state");
            var devices = new Dictionary<string, byte[]>(deviceCount, StringComparer.Ordinal);
            for (int i = 0; i < deviceCount; i++)
            {
                string id = r.ReadString();
                int length = ReadCount(r, 1, "device state byte");
                if (!devices.TryAdd(id, r.ReadBytes(length))) throw new InvalidDataException($"device state {id} appears twice");
            }
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException("trailing bytes after the device states");
            var configured = config.Devices.Select(d => d.Id).ToHashSet(StringComparer.Ordinal);
            if (!configured.SetEquals(devices.Keys))
                throw new InvalidDataException($"device states [{string.Join(", ", devices.Keys.Order())}] do not match the devices [{string.Join(", ", configured.Order())}]");
            return new SnapshotState
            {
                Config = config,
                Vm = vm,
                Vcpus = vcpus,
                DeviceStates = devices,
                CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(created, 0, 253402300799999)),
            };
        }
        catch (Exception e) when (e is IOException or InvalidDataException or FormatException or DecoderFallbackException or ArgumentException)
        {
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: corrupt snapshot state: {e.Message}", e);
        }
    }

    private static void WriteConfig(BinaryWriter w, MachineConfig c)
    {
        w.Write(c.MemoryBytes);
        w.Write(c.VcpuCount);
        w.Write(c.InKernelIrqchip);
        w.Write(c.Pvm);
        w.Write(c.KernelPath);
        w.Write(c.Devices.Count);
        foreach (var d in c.Devices)
        {
            w.Write(d.Id);
            w.Write(d.Kind);
            w.Write(d.Settings.Count);
            foreach (var (k, v) in d.Settings.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                w.Write(k);
                w.Write(v);
            }
        }
    }

    private static MachineConfig ReadConfig(BinaryReader r)
    {
        ulong mem = r.ReadUInt64();
        if (mem == 0 || mem % 4096 != 0) throw new InvalidDataException($"guest memory size {mem} is not a non-zero multiple of 4 KiB");
        int vcpus = r.ReadInt32();
        if (vcpus is < 1 or > 254) throw new InvalidDataException($"vCPU count {vcpus}");
        bool irqchip = ReadBool(r), pvm = ReadBool(r);
        string kernel = r.ReadString();
        int n = ReadCount(r, 3, "device");
        var devices = new List<DeviceDescriptor>(n);
        for (int i = 0; i < n; i++)
        {
            string id = r.ReadString(), kind = r.ReadString();
            int settings = ReadCount(r, 2, "device setting");
            var dict = new Dictionary<string, string>(settings, StringComparer.Ordinal);
            for (int j = 0; j < settings; j++)
            {
                string k = r.ReadString();
                if (!dict.TryAdd(k, r.ReadString())) throw new InvalidDataException($"device {id}: setting {k} appears twice");
            }
            if (devices.Any(d => d.Id == id)) throw new InvalidDataException($"device id {id} appears twice");
            devices.Add(new DeviceDescriptor(id, kind) { Settings = dict });
        }
        return new MachineConfig { MemoryBytes = mem, VcpuCount = vcpus, InKernelIrqchip = irqchip, Pvm = pvm, KernelPath = kernel, Devices = devices };
    }

    private static void WriteVcpu(BinaryWriter w, VcpuState v)
    {
        w.Write(v.Id);
        w.Write(v.Cpuid.Length);
        w.Write(MemoryMarshal.AsBytes(v.Cpuid.AsSpan()));
        WriteStruct<kvm_regs>(w, v.Regs);
        WriteStruct<kvm_sregs>(w, v.Sregs);
        WriteStruct<kvm_fpu>(w, v.Fpu);
        WriteStruct(w, v.Xsave);
        WriteStruct(w, v.Xcrs);
        WriteStruct(w, v.DebugRegs);
        w.Write(v.Msrs.Length);
        foreach (var m in v.Msrs)
        {
            w.Write(m.index);
            w.Write(m.data);
        }
        WriteStruct(w, v.Lapic);
        WriteStruct<kvm_vcpu_events>(w, v.Events);
        w.Write(v.MpState.HasValue);
        w.Write(v.MpState ?? 0);
    }

    private static VcpuState ReadVcpu(BinaryReader r)
    {
        int id = r.ReadInt32();
        int ncpuid = ReadCount(r, Unsafe.SizeOf<kvm_cpuid_entry2>(), "CPUID entry");
        var cpuid = new kvm_cpuid_entry2[ncpuid];
        r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(cpuid.AsSpan()));
        var regs = Required<kvm_regs>(r, "regs");
        var sregs = Required<kvm_sregs>(r, "sregs");
        var fpu = Required<kvm_fpu>(r, "fpu");
        var xsave = ReadStruct<kvm_xsave>(r);
        var xcrs = ReadStruct<kvm_xcrs>(r);
        var debug = ReadStruct<kvm_debugregs>(r);
        int nmsrs = ReadCount(r, 12, "MSR");
        var msrs = new kvm_msr_entry[nmsrs];
        for (int i = 0; i < nmsrs; i++) msrs[i] = new kvm_msr_entry { index = r.ReadUInt32(), data = r.ReadUInt64() };
        var lapic = ReadStruct<kvm_lapic_state>(r);
        var events = Required<kvm_vcpu_events>(r, "vcpu events");
        bool hasMp = ReadBool(r);
        uint mp = r.ReadUInt32();
        return new VcpuState
        {
            Id = id, Cpuid = cpuid, Regs = regs, Sregs = sregs, Fpu = fpu, Xsave = xsave, Xcrs = xcrs,
            DebugRegs = debug, Msrs = msrs, Lapic = lapic, Events = events, MpState = hasMp ? mp : null,
        };
    }

    private static void WriteStruct<T>(BinaryWriter w, T? value) where T : unmanaged
    {
        if (value is not { } v)
        {
            w.Write(0);
            return;
        }
        w.Write(Unsafe.SizeOf<T>());
        w.Write(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in v)));
    }

    private static T? ReadStruct<T>(BinaryReader r) where T : unmanaged
    {
        int length = r.ReadInt32();
        if (length == 0) return null;
        if (length != Unsafe.SizeOf<T>())
            throw new InvalidDataException($"{typeof(T).Name} is {length} bytes, expected {Unsafe.SizeOf<T>()}");
        Span<byte> bytes = length <= 8192 ? stackalloc byte[length] : new byte[length];
        r.BaseStream.ReadExactly(bytes);
        return MemoryMarshal.Read<T>(bytes);
    }

    private static T Required<T>(BinaryReader r, string what) where T : unmanaged =>
        ReadStruct<T>(r) ?? throw new InvalidDataException($"{what} missing");

    /// <summary>A count of items that each take at least <paramref name="minItemBytes"/>, checked against the bytes left.</summary>
    private static int ReadCount(BinaryReader r, int minItemBytes, string what)
    {
        int n = r.ReadInt32();
        long left = r.BaseStream.Length - r.BaseStream.Position;
        if (n < 0 || (long)n * minItemBytes > left) throw new InvalidDataException($"bad {what} count {n}");
        return n;
    }

    private static bool ReadBool(BinaryReader r) => r.ReadByte() switch
    {
        0 => false,
        1 => true,
        var b => throw new InvalidDataException($"bad flag byte {b}"),
    };
}
