using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Puts a vCPU into the state a boot protocol expects: the Linux 64-bit boot protocol (long mode,
/// identity-mapped first GiB) or PVH (32-bit protected mode, paging off). Also the per-vCPU defaults
/// every guest gets: MSRs, FPU control words and the LAPIC's LINT0/LINT1 wiring.
/// </summary>
public static class CpuSetup
{
    // Guest physical addresses of the boot-time structures: see BootLayout.
    private const ulong GdtAddress = BootLayout.GdtGpa, IdtAddress = BootLayout.IdtGpa;
    private const ulong Pml4Address = BootLayout.Pml4Gpa, PdptAddress = BootLayout.PdptGpa, PdAddress = BootLayout.PdGpa;
    private const ulong BootStackPointer = BootLayout.BootStackPointer;

    private const ulong Cr0PE = 1, Cr0ET = 1 << 4, Cr0NE = 1 << 5, Cr0PG = 1UL << 31;
    private const ulong Cr4PAE = 1 << 5;
    private const ulong EferLME = 1 << 8, EferLMA = 1 << 10;

    private const ushort CodeSelector = 0x08, DataSelector = 0x10, TssSelector = 0x18;

    /// <summary>
    /// Linux 64-bit boot protocol: long mode with paging on, an identity map of the first GiB (2 MiB pages),
    /// flat 64-bit code and data segments, RSI = boot_params.
    /// </summary>
    public static void SetupLinux64(KvmVcpu vcpu, GuestMemory memory, ulong entry, ulong bootParams)
    {
        WriteGdt(memory, longMode: true);
        memory.Write<ulong>(IdtAddress, 0);
        WriteIdentityPageTables(memory);

        var sregs = vcpu.GetSregs();
        SetFlatSegments(ref sregs, longMode: true);
        sregs.cr0 = Cr0PE | Cr0ET | Cr0NE | Cr0PG;
        sregs.cr3 = Pml4Address;
        sregs.cr4 = Cr4PAE;
        sregs.efer = EferLME | EferLMA;
        vcpu.SetSregs(sregs);

        vcpu.SetRegs(new kvm_regs { rip = entry, rsi = bootParams, rsp = BootStackPointer, rbp = BootStackPointer, rflags = 0x2 });
        SetupFpu(vcpu);
    }

    /// <summary>PVH entry: 32-bit protected mode, paging off, flat segments, RBX = hvm_start_info.</summary>
    public static void SetupPvh(KvmVcpu vcpu, GuestMemory memory, ulong entry, ulong startInfo)
    {
        WriteGdt(memory, longMode: false);
        memory.Write<ulong>(IdtAddress, 0);

        var sregs = vcpu.GetSregs();
        SetFlatSegments(ref sregs, longMode: false);
        sregs.cr0 = Cr0PE | Cr0ET;
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
        vcpu.SetSregs(sregs);

        vcpu.SetRegs(new kvm_regs { rip = entry, rbx = startInfo, rflags = 0x2 });
        SetupFpu(vcpu);
    }

    private static void WriteGdt(GuestMemory memory, bool longMode)
    {
        // null, code (64-bit L=1 or 32-bit D=1), data, TSS (busy, 64-bit)
        ulong code = longMode ? 0x00af_9b00_0000_ffffUL : 0x00cf_9b00_0000_ffffUL;
        memory.Write(GdtAddress + 0, 0UL);
        memory.Write(GdtAddress + 8, code);
        memory.Write(GdtAddress + 16, 0x00cf_9300_0000_ffffUL);
        memory.Write(GdtAddress + 24, 0x0000_8b00_0000_0067UL);
    }

    private static void SetFlatSegments(ref kvm_sregs sregs, bool longMode)
    {
        var code = new kvm_segment
        {
            @base = 0, limit = 0xffff_ffff, selector = CodeSelector, type = 0xb, present = 1, dpl = 0,
            db = longMode ? (byte)0 : (byte)1, s = 1, l = longMode ? (byte)1 : (byte)0, g = 1,
        };
        var data = new kvm_segment
        {
            @base = 0, limit = 0xffff_ffff, selector = DataSelector, type = 0x3, present = 1, dpl = 0, db = 1, s = 1, g = 1,
        };
        sregs.cs = code;
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
        sregs.tr = new kvm_segment { @base = 0, limit = 0x67, selector = TssSelector, type = 0xb, present = 1, s = 0 };
        sregs.gdt = new kvm_dtable { @base = GdtAddress, limit = 4 * 8 - 1 };
        sregs.idt = new kvm_dtable { @base = IdtAddress, limit = 7 };
    }

    private static void WriteIdentityPageTables(GuestMemory memory)
    {
        const ulong present = 1, writable = 2, pageSize = 0x80;
        memory.Clear(Pml4Address, 3 * 4096);
        memory.Write(Pml4Address, PdptAddress | present | writable);
        memory.Write(PdptAddress, PdAddress | present | writable);
        for (ulong i = 0; i < 512; i++)
            memory.Write(PdAddress + i * 8, (i << 21) | present | writable | pageSize);
    }

    private static void SetupFpu(KvmVcpu vcpu)
    {
        var fpu = new kvm_fpu { fcw = 0x37f, mxcsr = 0x1f80 };
        vcpu.SetFpu(fpu);
    }

    /// <summary>MSRs every vCPU starts with. Returns the names of any the host refused (logged by the caller).</summary>
    public static IReadOnlyList<string> SetupMsrs(KvmVcpu vcpu)
    {
        (uint Index, ulong Value, string Name)[] msrs =
        [
            (0x174, 0, "IA32_SYSENTER_CS"), (0x175, 0, "IA32_SYSENTER_ESP"), (0x176, 0, "IA32_SYSENTER_EIP"),
            (0xc000_0081, 0, "STAR"), (0xc000_0082, 0, "LSTAR"), (0xc000_0083, 0, "CSTAR"),
            (0xc000_0084, 0, "SYSCALL_MASK"), (0xc000_0102, 0, "KERNEL_GS_BASE"), (0x10, 0, "IA32_TSC"),
            (0x1a0, 1, "IA32_MISC_ENABLE (fast strings)"), (0x2ff, (1 << 11) | 6, "MTRR_DEF_TYPE (enabled, write-back)"),
        ];
        var refused = new List<string>();
        foreach (var (index, value, name) in msrs)
        {
            try { vcpu.SetMsrs([new kvm_msr_entry { index = index, data = value }]); }
            catch (KvmException) { refused.Add(name); }
        }
        return refused;
    }

    /// <summary>Wires LINT0 as ExtINT (the PIC) and LINT1 as NMI, as a PC's firmware would.</summary>
    public static void SetupLapic(KvmVcpu vcpu)
    {
        const int lvtLint0 = 0x350, lvtLint1 = 0x360;
        const uint deliveryModeMask = 0x700, extInt = 0x700, nmi = 0x400;
        var lapic = vcpu.GetLapic();
        lapic.SetRegister(lvtLint0, (lapic.GetRegister(lvtLint0) & ~deliveryModeMask) | extInt);
        lapic.SetRegister(lvtLint1, (lapic.GetRegister(lvtLint1) & ~deliveryModeMask) | nmi);
        vcpu.SetLapic(lapic);
    }
}
