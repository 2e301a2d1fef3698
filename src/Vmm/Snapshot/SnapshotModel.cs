using FireSharp.Devices;
using FireSharp.Kvm.Interop;

namespace FireSharp.Snapshot;

/// <summary>What the snapshotted machine was: enough to rebuild the same VM and device set.</summary>
public sealed record MachineConfig
{
    public required ulong MemoryBytes { get; init; }
    public required int VcpuCount { get; init; }
    public bool InKernelIrqchip { get; init; } = true;

    /// <summary>Whether the source host applied the PVM workarounds (informational; restore detects its own host).</summary>
    public bool Pvm { get; init; }

    /// <summary>The kernel the VM originally booted (informational, may be empty).</summary>
    public string KernelPath { get; init; } = "";

    public required IReadOnlyList<DeviceDescriptor> Devices { get; init; }
}

/// <summary>The in-kernel irqchip, PIT and clock. Absent parts (no in-kernel irqchip, unsupported ioctl) are null.</summary>
public sealed record VmKernelState
{
    public kvm_irqchip? PicMaster { get; init; }
    public kvm_irqchip? PicSlave { get; init; }
    public kvm_irqchip? Ioapic { get; init; }
    public kvm_pit_state2? Pit { get; init; }
    public kvm_clock_data? Clock { get; init; }
}

/// <summary>Everything KVM holds for one vCPU.</summary>
public sealed record VcpuState
{
    public required int Id { get; init; }
    public required kvm_cpuid_entry2[] Cpuid { get; init; }
    public required kvm_regs Regs { get; init; }
    public required kvm_sregs Sregs { get; init; }
    public required kvm_fpu Fpu { get; init; }

    /// <summary>KVM_GET_XSAVE, or null where KVM_CAP_XSAVE is absent or the ioctl failed (FPU/SSE state is then in <see cref="Fpu"/>).</summary>
    public kvm_xsave? Xsave { get; init; }

    public kvm_xcrs? Xcrs { get; init; }
    public kvm_debugregs? DebugRegs { get; init; }

    /// <summary>Every MSR of KVM_GET_MSR_INDEX_LIST that KVM could read for this vCPU.</summary>
    public required kvm_msr_entry[] Msrs { get; init; }

    public kvm_lapic_state? Lapic { get; init; }
    public required kvm_vcpu_events Events { get; init; }
    public uint? MpState { get; init; }
}

/// <summary>The content of a snapshot's state file.</summary>
public sealed record SnapshotState
{
    public required MachineConfig Config { get; init; }
    public required VmKernelState Vm { get; init; }
    public required IReadOnlyList<VcpuState> Vcpus { get; init; }

    /// <summary>Device state id → the device's own encoding (<see cref="Devices.IStatefulDevice.SaveState"/>).</summary>
    public required IReadOnlyDictionary<string, byte[]> DeviceStates { get; init; }

    /// <summary>When the snapshot was taken (UTC, informational).</summary>
    public DateTimeOffset CreatedAt { get; init; }
}
