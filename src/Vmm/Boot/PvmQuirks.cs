namespace FireSharp.Boot;

/// <summary>
/// What FireSharp changes on a PVM host (KVM without hardware virtualization; see docs/pvm.md), each
/// logged by name when applied. None of it is applied on a hardware-virtualization host.
/// </summary>
public static class PvmQuirks
{
    /// <summary>
    /// CPUID features hidden from the guest: instructions PVM's emulator (which runs all guest kernel
    /// code) lacks, and paravirtual features whose hypercalls are too slow there.
    /// </summary>
    public static IReadOnlyList<CpuidFeature> MaskedFeatures =>
        Environment.GetEnvironmentVariable(UnmaskVariable) is { Length: > 0 } unmask
            ? [.. AllMaskedFeatures.Where(f => !unmask.Split(',').Any(u => f.Name.StartsWith(u, StringComparison.Ordinal)))]
            : AllMaskedFeatures;

    /// <summary>Experiment knob: comma-separated name prefixes of <see cref="AllMaskedFeatures"/> to leave visible.</summary>
    public const string UnmaskVariable = "FIRESHARP_PVM_UNMASK";

    /// <summary>Experiment knob: replaces the clearcpuid= list (empty: no clearcpuid parameter at all).</summary>
    public const string ClearCpuidVariable = "FIRESHARP_PVM_CLEARCPUID";

    // Found by booting the project's 6.1 guest with one change at a time (docs/pvm.md, "Minimal set"):
    // XSAVE needs only `noxsave`, and SMAP and POPCNT need `clearcpuid` (their CPUID bits alone are not
    // enough), so only CX16 is hidden here for a missing instruction.
    private static readonly IReadOnlyList<CpuidFeature> AllMaskedFeatures =
    [
        new("CX16 (cmpxchg16b is not emulated)", 0x1, 0, CpuidRegister.Ecx, 13),
        // KVM paravirtual features built on hypercalls: on PVM a guest hypercall is pathologically slow
        // (RIP sampling found an AP stuck in __send_ipi_mask's KVM_HC_SEND_IPI during SMP bring-up, and
        // the PTP clock driver spinning in kvm_hypercall2), so the guest uses the native paths instead.
        new("KVM_FEATURE_PV_UNHALT (KVM_HC_KICK_CPU hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 7),
        new("KVM_FEATURE_PV_SEND_IPI (KVM_HC_SEND_IPI hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 11),
        new("KVM_FEATURE_PV_SCHED_YIELD (KVM_HC_SCHED_YIELD hypercall)", 0x4000_0001, 0, CpuidRegister.Eax, 13),
    ];

    /// <summary>
    /// Linux parameters a guest kernel needs on PVM.
    /// </summary>
    public static IReadOnlyList<(string Parameter, string Why)> LinuxParameters =>
        Environment.GetEnvironmentVariable(ClearCpuidVariable) is { } list
            ? [.. AllLinuxParameters.Where(p => !p.Parameter.StartsWith("clearcpuid=", StringComparison.Ordinal)),
               .. list.Length > 0 ? [("clearcpuid=" + list, $"from {ClearCpuidVariable}")] : Array.Empty<(string, string)>()]
            : AllLinuxParameters;

    private static readonly IReadOnlyList<(string Parameter, string Why)> AllLinuxParameters =
    [
        ("noxsave", "xrstor is not emulated"),
        // X86_FEATURE bit numbers (word*32+bit): SMAP (9*32+20) and POPCNT (4*32+23). The minimal set:
        // without SMAP the kernel dies on clac, without POPCNT on popcnt in __bitmap_weight (docs/pvm.md).
        ("clearcpuid=308,151", "clac/stac (SMAP) and popcnt are not emulated; hiding their CPUID bits is not enough"),
        ("tsc=reliable", "the TSC watchdog misfires under emulation"),
        ("no_timer_check", "the timer check fails under emulation"),
    ];

    /// <summary>One-byte instructions the emulator reports as an emulation failure and FireSharp completes itself.</summary>
    public const byte Int3 = 0xCC, Fwait = 0x9B;
}
