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
    /// Linux parameters a guest kernel needs on PVM (the last one is an environment variable the kernel
    /// hands to init; see <see cref="GlibcTunables"/>).
    /// </summary>
    public static IReadOnlyList<(string Parameter, string Why)> LinuxParameters =>
        BuildLinuxParameters(Environment.GetEnvironmentVariable(ClearCpuidVariable), Environment.GetEnvironmentVariable(GlibcTunablesVariable));

    /// <summary>
    /// The parameters for the given experiment-knob values: <paramref name="clearCpuid"/> replaces the
    /// clearcpuid= list and <paramref name="glibcTunables"/> the GLIBC_TUNABLES value (null: the defaults;
    /// empty: leave the parameter out).
    /// </summary>
    internal static IReadOnlyList<(string Parameter, string Why)> BuildLinuxParameters(string? clearCpuid, string? glibcTunables)
    {
        var list = new List<(string Parameter, string Why)>();
        foreach (var p in AllLinuxParameters)
        {
            if (clearCpuid is not null && p.Parameter.StartsWith("clearcpuid=", StringComparison.Ordinal))
            {
                if (clearCpuid.Length > 0) list.Add(("clearcpuid=" + clearCpuid, $"from {ClearCpuidVariable}"));
            }
            else list.Add(p);
        }
        if (glibcTunables is null)
            list.Add((GlibcTunablesParameter + GlibcTunables, GlibcTunablesWhy));
        else if (glibcTunables.Length > 0)
            list.Add((GlibcTunablesParameter + glibcTunables, $"from {GlibcTunablesVariable}"));
        return list;
    }

    private static readonly IReadOnlyList<(string Parameter, string Why)> AllLinuxParameters =
    [
        ("noxsave", "xrstor is not emulated"),
        // X86_FEATURE bit numbers (word*32+bit): SMAP (9*32+20) and POPCNT (4*32+23). The minimal set:
        // without SMAP the kernel dies on clac, without POPCNT on popcnt in __bitmap_weight (docs/pvm.md).
        ("clearcpuid=308,151", "clac/stac (SMAP) and popcnt are not emulated; hiding their CPUID bits is not enough"),
        ("tsc=reliable", "the TSC watchdog misfires under emulation"),
        ("no_timer_check", "the timer check fails under emulation"),
    ];

    /// <summary>Experiment knob: replaces the GLIBC_TUNABLES value handed to the guest's init (empty: none).</summary>
    public const string GlibcTunablesVariable = "FIRESHARP_PVM_GLIBC_TUNABLES";

    /// <summary>
    /// Keeps the guest's glibc (busybox, the agent's libc) off AVX, AVX2 and AVX-512. On PVM, guest user
    /// mode runs natively: CPUID and XGETBV there report the host's AVX/AVX-512 support (KVM's CPUID
    /// table and the guest's CR4.OSXSAVE do not apply), and the host's XCR0 lets those instructions run.
    /// But the guest kernel runs with <c>noxsave</c> (the emulator lacks xrstor), so on a context switch
    /// it saves and restores only the FXSAVE state (x87, xmm0-15). The rest of the AVX-512 state (ymm16-31
    /// seen; mask registers and zmm upper halves likewise) leaks from one guest process into another:
    /// glibc's EVEX memcpy (ymm16/ymm17) wrote another process's register contents into a new process's
    /// TLS block when the process was preempted at the TLS page's first-touch fault, and busybox died of
    /// SIGSEGV in __ctype_init (docs/pvm.md). glibc ignores unknown names; these are glibc 2.33+ names.
    /// </summary>
    public const string GlibcTunables = "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX_Fast_Unaligned_Load";

    // Linux hands an unknown parameter NAME=VALUE to init as an environment variable when NAME has no '.'
    // (a dotted name is taken for a module parameter), so every process /init starts inherits it.
    internal const string GlibcTunablesParameter = "GLIBC_TUNABLES=";

    private const string GlibcTunablesWhy =
        "guest user mode sees the host's AVX/AVX-512, but a noxsave kernel context-switches only the FXSAVE state: "
        + "keep glibc on SSE so processes do not see each other's ymm/zmm registers";

    /// <summary>One-byte instructions the emulator reports as an emulation failure and FireSharp completes itself.</summary>
    public const byte Int3 = 0xCC, Fwait = 0x9B;
}
