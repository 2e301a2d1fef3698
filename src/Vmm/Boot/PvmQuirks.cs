namespace FireSharp.Boot;

/// <summary>
/// What FireSharp changes on a PVM host (KVM without hardware virtualization; see docs/pvm.md), each
/// logged by name when applied. None of it is applied on a hardware-virtualization host.
/// </summary>
public static class PvmQuirks
{
    /// <summary>
    /// CPUID features hidden from the guest because PVM's instruction emulator (which runs all guest
    /// kernel code) lacks the instructions behind them.
    /// </summary>
    public static readonly IReadOnlyList<CpuidFeature> MaskedFeatures =
    [
        new("XSAVE (xrstor is not emulated)", 0x1, 0, CpuidRegister.Ecx, 26),
        new("OSXSAVE", 0x1, 0, CpuidRegister.Ecx, 27),
        new("POPCNT (not emulated)", 0x1, 0, CpuidRegister.Ecx, 23),
        new("CX16 (cmpxchg16b is not emulated)", 0x1, 0, CpuidRegister.Ecx, 13),
        new("SMAP (clac/stac are not emulated)", 0x7, 0, CpuidRegister.Ebx, 20),
        // KVM paravirtual features built on hypercalls: on PVM a guest hypercall is pathologically slow
        // (RIP sampling found an AP stuck in __send_ipi_mask's KVM_HC_SEND_IPI during SMP bring-up, and
        // the PTP clock driver spinning in kvm_hypercall2), so the guest uses the native paths instead.
        new("KVM_FEATURE_PV_UNHALT (KVM_HC_KICK_CPU hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 7),
        new("KVM_FEATURE_PV_SEND_IPI (KVM_HC_SEND_IPI hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 11),
        new("KVM_FEATURE_PV_SCHED_YIELD (KVM_HC_SCHED_YIELD hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 13),
    ];

    /// <summary>
    /// Linux parameters a guest kernel needs on PVM. <c>clearcpuid</c> is needed as well as the CPUID mask
    /// because the kernel consults its own feature table for SMAP.
    /// </summary>
    public static readonly IReadOnlyList<(string Parameter, string Why)> LinuxParameters =
    [
        ("noxsave", "xrstor is not emulated"),
        // X86_FEATURE bit numbers (word*32+bit): SMAP, SMEP; POPCNT, MOVBE, AES, AVX, F16C, RDRAND, FMA,
        // PCLMULQDQ, CX16, PCID; BMI1, AVX2, BMI2, ERMS, INVPCID, RDSEED, ADX, CLFLUSHOPT, CLWB, SHA_NI,
        // FSGSBASE; RDTSCP, ABM, FSRM. A broad cut known to boot (docs/pvm.md); the minimal set is open.
        ("clearcpuid=308,295,151,150,153,156,157,158,140,129,141,145,291,293,296,297,298,306,307,311,312,317,288,59,197,580",
            "the emulator lacks instructions behind these features (SMAP clac/stac, POPCNT, CX16 cmpxchg16b, ...)"),
        ("tsc=reliable", "the TSC watchdog misfires under emulation"),
        ("no_timer_check", "the timer check fails under emulation"),
    ];

    /// <summary>One-byte instructions the emulator reports as an emulation failure and FireSharp completes itself.</summary>
    public const byte Int3 = 0xCC, Fwait = 0x9B;
}
