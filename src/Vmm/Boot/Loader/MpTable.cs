using System.Buffers.Binary;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Writes an Intel MultiProcessor Specification 1.4 table: a 16-byte floating pointer ("_MP_") at gpa followed by
/// the configuration table ("PCMP") with one processor entry per vCPU, one ISA bus, one IOAPIC, I/O interrupt
/// entries for IOAPIC pins 0..23 (ISA IRQs 0..15 and the virtio-mmio GSIs up to 23, identity-mapped) and the two
/// local interrupt entries (ExtINT on LINT0, NMI on LINT1). Linux finds the floating pointer by scanning
/// [0x9fc00, 0xa0000), so gpa defaults there.
/// </summary>
public static class MpTable
{
    public const int MaxVcpus = 254;
    public const int IoApicPins = 24;
    public const byte SpecRevision = 4;          // MP spec 1.4
    public const byte LocalApicVersion = 0x14;   // what KVM's local APIC reports
    public const byte IoApicVersion = 0x11;      // what KVM's IOAPIC reports

    public const int FloatingPointerSize = 16, HeaderSize = 44, ProcessorEntrySize = 20, SmallEntrySize = 8;

    // Entry types.
    public const byte EntryProcessor = 0, EntryBus = 1, EntryIoApic = 2, EntryIoInterrupt = 3, EntryLocalInterrupt = 4;
    // Interrupt types.
    public const byte IntTypeInt = 0, IntTypeNmi = 1, IntTypeExtInt = 3;

    private const byte CpuEnabled = 0x01, CpuBootstrap = 0x02, IoApicEnabled = 0x01;
    private const uint CpuSignature = 0x600;              // family 6
    private const uint CpuFeatures = (1u << 0) | (1u << 9); // FPU, APIC

    /// <summary>Bytes the table takes for <paramref name="vcpuCount"/> vCPUs (floating pointer included).</summary>
    public static int Size(int vcpuCount) =>
        FloatingPointerSize + HeaderSize + vcpuCount * ProcessorEntrySize + SmallEntrySize * (2 + IoApicPins + 2);

    /// <summary>Throws <see cref="BootErrorReason.InvalidVcpuCount"/> unless 1 &lt;= <paramref name="vcpuCount"/> &lt;= 254.</summary>
    public static void ValidateVcpuCount(int vcpuCount)
    {
        if (vcpuCount is < 1 or > MaxVcpus)
            throw new BootException(BootErrorReason.InvalidVcpuCount, $"vCPU count {vcpuCount} is outside 1..{MaxVcpus}");
    }

    /// <summary>Writes the table at <paramref name="gpa"/> (16-byte aligned); returns the bytes written.</summary>
    public static int Write(GuestMemory mem, ulong gpa, int vcpuCount, ulong regionEnd = BootLayout.MpTableEnd)
    {
        ArgumentNullException.ThrowIfNull(mem);
        ValidateVcpuCount(vcpuCount);
        if (gpa % 16 != 0)
            throw new ArgumentOutOfRangeException(nameof(gpa), gpa, "the MP floating pointer must be 16-byte aligned");
        int size = Size(vcpuCount);
        if (gpa > regionEnd || (ulong)size > regionEnd - gpa || gpa + (ulong)size > uint.MaxValue)
            throw new BootException(BootErrorReason.BootDataDoesNotFit,
                $"MP table of {size} bytes at 0x{gpa:x} does not fit below 0x{regionEnd:x}");

        Span<byte> t = new byte[size];
        byte ioApicId = (byte)vcpuCount;
        ulong config = gpa + FloatingPointerSize;

        // Floating pointer structure.
        "_MP_"u8.CopyTo(t);
        W32(t, 4, (uint)config);
        t[8] = 1;                 // length in 16-byte paragraphs
        t[9] = SpecRevision;
        // t[11] feature1 = 0: a configuration table is present; t[12] feature2 bit 7 = 0: virtual-wire mode, no IMCR.
        t[10] = Checksum(t[..FloatingPointerSize]);

        // Configuration table: header, then entries.
        var c = t[FloatingPointerSize..];
        int p = HeaderSize, count = 0;
        for (int i = 0; i < vcpuCount; i++)
        {
            var e = c.Slice(p, ProcessorEntrySize);
            e[0] = EntryProcessor;
            e[1] = (byte)i;                                           // local APIC id
            e[2] = LocalApicVersion;
            e[3] = (byte)(CpuEnabled | (i == 0 ? CpuBootstrap : 0));
            W32(e, 4, CpuSignature);
            W32(e, 8, CpuFeatures);
            p += ProcessorEntrySize; count++;
        }

        const byte isaBus = 0;
        c[p] = EntryBus; c[p + 1] = isaBus; "ISA   "u8.CopyTo(c[(p + 2)..]);
        p += SmallEntrySize; count++;

        c[p] = EntryIoApic; c[p + 1] = ioApicId; c[p + 2] = IoApicVersion; c[p + 3] = IoApicEnabled;
        W32(c, p + 4, BootLayout.IoApicAddress);
        p += SmallEntrySize; count++;

        for (int pin = 0; pin < IoApicPins; pin++)
        {
            // Flags 0: polarity and trigger conform to the bus. Source IRQ == IOAPIC pin == GSI.
            c[p] = EntryIoInterrupt; c[p + 1] = IntTypeInt; W16(c, p + 2, 0);
            c[p + 4] = isaBus; c[p + 5] = (byte)pin; c[p + 6] = ioApicId; c[p + 7] = (byte)pin;
            p += SmallEntrySize; count++;
        }

        c[p] = EntryLocalInterrupt; c[p + 1] = IntTypeExtInt; W16(c, p + 2, 0);
        c[p + 4] = isaBus; c[p + 5] = 0; c[p + 6] = 0xff; c[p + 7] = 0; // all local APICs, LINT0
        p += SmallEntrySize; count++;
        c[p] = EntryLocalInterrupt; c[p + 1] = IntTypeNmi; W16(c, p + 2, 0);
        c[p + 4] = isaBus; c[p + 5] = 0; c[p + 6] = 0xff; c[p + 7] = 1; // all local APICs, LINT1
        p += SmallEntrySize; count++;

        "PCMP"u8.CopyTo(c);
        W16(c, 4, (ushort)p);          // base table length
        c[6] = SpecRevision;
        "FIRESHRP"u8.CopyTo(c[8..]);   // OEM id, 8 bytes
        "FireSharp VM"u8.CopyTo(c[16..]); // product id, 12 bytes
        W32(c, 28, 0);                 // no OEM table
        W16(c, 32, 0);
        W16(c, 34, (ushort)count);
        W32(c, 36, BootLayout.LocalApicAddress);
        W16(c, 40, 0);                 // no extended table
        c[7] = Checksum(c[..p]);

        mem.Write(gpa, t);
        return size;
    }

    /// <summary>The byte that makes <paramref name="bytes"/> (with that byte currently 0) sum to 0 mod 256.</summary>
    private static byte Checksum(ReadOnlySpan<byte> bytes)
    {
        byte sum = 0;
        foreach (byte b in bytes) sum += b;
        return (byte)(0 - sum);
    }

    private static void W16(Span<byte> b, int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(b[o..], v);
    private static void W32(Span<byte> b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b[o..], v);
}
