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
        new("SMAP (clac/stac are not emulated)", 0x7, 0, CpuidRegister.Ebx, 20),
    ];

    /// <summary>
    /// Linux parameters a guest kernel needs on PVM. <c>clearcpuid</c> is needed as well as the CPUID mask
    /// because the kernel consults its own feature table for SMAP.
    /// </summary>
    public static readonly IReadOnlyList<(string Parameter, string Why)> LinuxParameters =
    [
        ("noxsave", "xrstor is not emulated"),
        ("clearcpuid=308,295,151", "SMAP (9*32+20), SMEP (9*32+7) and POPCNT (4*32+23) use instructions the emulator lacks"),
        ("tsc=reliable", "the TSC watchdog misfires under emulation"),
        ("no_timer_check", "the timer check fails under emulation"),
    ];

    /// <summary>One-byte instructions the emulator reports as an emulation failure and FireSharp completes itself.</summary>
    public const byte Int3 = 0xCC, Fwait = 0x9B;
}
