namespace FireSharp.Vm;

/// <summary>Why a VM stopped running.</summary>
public enum VmExitKind
{
    /// <summary>The guest reset itself (i8042 reset, reboot): a clean end.</summary>
    Reset,
    /// <summary>The guest powered off (KVM system event shutdown or a guest power-off signal): a clean end.</summary>
    PowerOff,
    /// <summary>The host stopped the VM.</summary>
    Stopped,
    /// <summary>A vCPU executed HLT with nothing to wake it (only without the in-kernel irqchip).</summary>
    Halt,
    /// <summary>Triple fault (KVM_EXIT_SHUTDOWN).</summary>
    TripleFault,
    /// <summary>The hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).</summary>
    FailEntry,
    /// <summary>KVM could not handle the guest (KVM_EXIT_INTERNAL_ERROR), e.g. an instruction the emulator lacks.</summary>
    InternalError,
    /// <summary>The guest reported a crash (KVM system event crash).</summary>
    GuestCrash,
    /// <summary>The VMM itself failed (an ioctl error, an unexpected exit).</summary>
    VmmError,
}

/// <summary>The end of a VM: kind, a one-line human reason, and the vCPU that saw it.</summary>
public sealed record VmExit(VmExitKind Kind, string Reason, int? VcpuId = null)
{
    /// <summary>Reset, power-off and host stop are clean ends (CLI exit code 0).</summary>
    public bool IsClean => Kind is VmExitKind.Reset or VmExitKind.PowerOff or VmExitKind.Stopped;

    public override string ToString() => VcpuId is { } id ? $"{Kind}: {Reason} (vcpu {id})" : $"{Kind}: {Reason}";
}

/// <summary>
/// How often KVM_RUN returned to the VMM, by reason: port I/O, MMIO, interrupted (a signal or immediate_exit: pauses,
/// stops, device kicks), and any other exit (halts, shutdowns, errors: the ones that end a VM).
/// </summary>
public readonly record struct VcpuExitCounts(long Io, long Mmio, long Interrupted, long Other)
{
    public VcpuExitCounts Add(VcpuExitCounts b) => new(Io + b.Io, Mmio + b.Mmio, Interrupted + b.Interrupted, Other + b.Other);
}
