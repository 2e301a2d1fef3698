// Blittable mirrors of the structs in <linux/kvm.h> (x86_64). Field names follow the C header so the
// two can be read side by side; tests/abi/kvm-abi-probe.c pins every size and offset used here.
// No bool fields (not blittable), padding as fixed arrays.
using System.Runtime.InteropServices;

#pragma warning disable IDE1006, CA1707 // names match the kernel header on purpose

namespace FireSharp.Kvm.Interop;

[StructLayout(LayoutKind.Sequential)]
public struct kvm_userspace_memory_region
{
    public uint slot;
    public uint flags;
    public ulong guest_phys_addr;
    public ulong memory_size;
    public ulong userspace_addr;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_regs
{
    public ulong rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    public ulong r8, r9, r10, r11, r12, r13, r14, r15;
    public ulong rip, rflags;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_segment
{
    public ulong @base;
    public uint limit;
    public ushort selector;
    public byte type;
    public byte present, dpl, db, s, l, g, avl;
    public byte unusable;
    public byte padding;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_dtable
{
    public ulong @base;
    public ushort limit;
    public fixed ushort padding[3];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_sregs
{
    public kvm_segment cs, ds, es, fs, gs, ss;
    public kvm_segment tr, ldt;
    public kvm_dtable gdt, idt;
    public ulong cr0, cr2, cr3, cr4, cr8;
    public ulong efer;
    public ulong apic_base;
    // (KVM_NR_INTERRUPTS + 63) / 64 with KVM_NR_INTERRUPTS = 256.
    public fixed ulong interrupt_bitmap[4];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_fpu
{
    public fixed byte fpr[8 * 16];
    public ushort fcw;
    public ushort fsw;
    public byte ftwx; // abridged tag word, as in FXSAVE
    public byte pad1;
    public ushort last_opcode;
    public ulong last_ip;
    public ulong last_dp;
    public fixed byte xmm[16 * 16];
    public uint mxcsr;
    public uint pad2;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_msr_entry
{
    public uint index;
    public uint reserved;
    public ulong data;
}

/// <summary>Header of the variable-length <c>struct kvm_msrs</c>; entries follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_msrs
{
    public uint nmsrs;
    public uint pad;
}

/// <summary>Header of the variable-length <c>struct kvm_msr_list</c>; u32 indices follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_msr_list
{
    public uint nmsrs;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_cpuid_entry2
{
    public uint function;
    public uint index;
    public uint flags;
    public uint eax, ebx, ecx, edx;
    public fixed uint padding[3];
}

/// <summary>Header of the variable-length <c>struct kvm_cpuid2</c>; entries follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct kvm_cpuid2
{
    public uint nent;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_lapic_state
{
    public const int Size = 1024;
    public fixed byte regs[Size];

    /// <summary>Reads the 32-bit APIC register at byte offset <paramref name="offset"/> (e.g. 0x350 for LVT LINT0).</summary>
    public readonly uint GetRegister(int offset)
    {
        if ((uint)offset > Size - 4) throw new ArgumentOutOfRangeException(nameof(offset));
        fixed (byte* p = regs) return *(uint*)(p + offset);
    }

    public void SetRegister(int offset, uint value)
    {
        if ((uint)offset > Size - 4) throw new ArgumentOutOfRangeException(nameof(offset));
        fixed (byte* p = regs) *(uint*)(p + offset) = value;
    }
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_mp_state
{
    public uint mp_state;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_vcpu_events
{
    // exception
    public byte exception_injected, exception_nr, exception_has_error_code, exception_pending;
    public uint exception_error_code;
    // interrupt
    public byte interrupt_injected, interrupt_nr, interrupt_soft, interrupt_shadow;
    // nmi
    public byte nmi_injected, nmi_pending, nmi_masked, nmi_pad;
    public uint sipi_vector;
    public uint flags;
    // smi
    public byte smi_smm, smi_pending, smi_smm_inside_nmi, smi_latched_init;
    public fixed byte reserved[27];
    public byte exception_has_payload;
    public ulong exception_payload;
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_irq_level
{
    public uint irq; // union with s32 status (KVM_IRQ_LINE_STATUS)
    public uint level;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_irqfd
{
    public uint fd;
    public uint gsi;
    public uint flags;
    public uint resamplefd;
    public fixed byte pad[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_ioeventfd
{
    public ulong datamatch;
    public ulong addr;
    public uint len;
    public int fd;
    public uint flags;
    public fixed byte pad[36];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_pit_config
{
    public uint flags;
    public fixed uint pad[15];
}

/// <summary><c>struct kvm_irqchip</c>: chip_id plus a 512-byte union (PIC or IOAPIC state), kept opaque.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_irqchip
{
    public const int ChipSize = 512;
    public uint chip_id;
    public uint pad;
    public fixed byte chip[ChipSize];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_pit_channel_state
{
    public uint count; // can be 65536
    public ushort latched_count;
    public byte count_latched;
    public byte status_latched;
    public byte status;
    public byte read_state;
    public byte write_state;
    public byte write_latch;
    public byte rw_mode;
    public byte mode;
    public byte bcd;
    public byte gate;
    public long count_load_time;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_pit_state2
{
    public kvm_pit_channel_state channel0, channel1, channel2;
    public uint flags;
    public fixed uint reserved[9];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_clock_data
{
    public ulong clock;
    public uint flags;
    public uint pad0;
    public ulong realtime;
    public ulong host_tsc;
    public fixed uint pad[4];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_debugregs
{
    public fixed ulong db[4];
    public ulong dr6;
    public ulong dr7;
    public ulong flags;
    public fixed ulong reserved[9];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_xcr
{
    public uint xcr;
    public uint reserved;
    public ulong value;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_xcrs
{
    public const int MaxXcrs = 16;
    public uint nr_xcrs;
    public uint flags;
    public fixed byte xcrs[MaxXcrs * 16]; // kvm_xcr[16]
    public fixed ulong padding[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_xsave
{
    public const int Size = 4096;
    public fixed uint region[Size / 4];
}

[StructLayout(LayoutKind.Sequential)]
public struct kvm_dirty_log
{
    public uint slot;
    public uint padding1;
    public ulong dirty_bitmap; // union { void *dirty_bitmap; __u64 padding2; }
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_enable_cap
{
    public uint cap;
    public uint flags;
    public fixed ulong args[4];
    public fixed byte pad[64];
}

/// <summary>
/// Offsets into the mmap'ed <c>struct kvm_run</c>. It is a large union-heavy struct shared with the
/// kernel, so FireSharp reads the fields it needs at fixed offsets rather than mirroring all of it.
/// </summary>
public static class KvmRunOffsets
{
    public const int request_interrupt_window = 0;
    public const int immediate_exit = 1;
    public const int exit_reason = 8;
    public const int ready_for_interrupt_injection = 12;
    public const int if_flag = 13;
    public const int cr8 = 16;
    public const int apic_base = 24;
    /// <summary>Start of the exit-specific union (256 bytes).</summary>
    public const int exit_union = 32;
    public const int io_direction = 32, io_size = 33, io_port = 34, io_count = 36, io_data_offset = 40;
    public const int mmio_phys_addr = 32, mmio_data = 40, mmio_len = 48, mmio_is_write = 52;
    public const int fail_entry_hardware_entry_failure_reason = 32, fail_entry_cpu = 40;
    public const int internal_suberror = 32, internal_ndata = 36, internal_data = 40;
    public const int system_event_type = 32, system_event_ndata = 36, system_event_data = 40;
    public const int kvm_valid_regs = 288;
    /// <summary>sizeof(struct kvm_run) on x86_64; the mmap is KVM_GET_VCPU_MMAP_SIZE, which is larger.</summary>
    public const int Size = 2352;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct kvm_translation
{
    public ulong linear_address;
    public ulong physical_address;
    public byte valid, writeable, usermode;
    public fixed byte pad[5];
}
