using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;
using static FireSharp.Kvm.Interop.KvmConstants;

namespace FireSharp.Snapshot;

/// <summary>Reads and writes the KVM-held state of a VM and its vCPUs (the VM must not be running).</summary>
internal static class KvmStateIo
{
    /// <summary>IA32_TSC_DEADLINE: its write is ignored unless the LAPIC timer is in TSC-deadline mode, so it is set again after the LAPIC.</summary>
    private const uint MsrTscDeadline = 0x6e0;

    public static VmKernelState CaptureVm(VirtualMachine machine)
    {
        if (!machine.Options.InKernelIrqchip) return new VmKernelState();
        var vm = machine.Kvm;
        return new VmKernelState
        {
            PicMaster = vm.GetIrqchip(KVM_IRQCHIP_PIC_MASTER),
            PicSlave = vm.GetIrqchip(KVM_IRQCHIP_PIC_SLAVE),
            Ioapic = vm.GetIrqchip(KVM_IRQCHIP_IOAPIC),
            Pit = Optional(() => vm.GetPit2(), machine.Logger, "KVM_GET_PIT2"),
            Clock = Has(vm, KVM_CAP_ADJUST_CLOCK) ? Optional(() => vm.GetClock(), machine.Logger, "KVM_GET_CLOCK") : null,
        };
    }

    public static void ApplyVm(VirtualMachine machine, VmKernelState s)
    {
        var vm = machine.Kvm;
        if (s.PicMaster is { } m) vm.SetIrqchip(m);
        if (s.PicSlave is { } sl) vm.SetIrqchip(sl);
        if (s.Ioapic is { } io) vm.SetIrqchip(io);
        if (s.Pit is { } pit) vm.SetPit2(pit);
        if (s.Clock is { } clock)
        {
            // Only the clock value: the flags of KVM_GET_CLOCK (TSC_STABLE, REALTIME, HOST_TSC) describe
            // the source host at capture time and would ask KVM to correct for wall time passed.
            var c = new kvm_clock_data { clock = clock.clock };
            vm.SetClock(c);
        }
    }

    public static VcpuState CaptureVcpu(VirtualMachine machine, int index, uint[] msrIndices)
    {
        var vcpu = machine.Vcpus[index];
        var vm = machine.Kvm;
        var log = machine.Logger;
        bool irqchip = machine.Options.InKernelIrqchip;
        return new VcpuState
        {
            Id = index,
            Cpuid = [.. machine.VcpuCpuid(index)],
            Regs = vcpu.GetRegs(),
            Sregs = vcpu.GetSregs(),
            Fpu = vcpu.GetFpu(),
            Xsave = Has(vm, KVM_CAP_XSAVE) ? Optional(() => vcpu.GetXsave(), log, "KVM_GET_XSAVE") : null,
            Xcrs = Has(vm, KVM_CAP_XCRS) ? Optional(() => vcpu.GetXcrs(), log, "KVM_GET_XCRS") : null,
            DebugRegs = Has(vm, KVM_CAP_DEBUGREGS) ? Optional(() => vcpu.GetDebugRegs(), log, "KVM_GET_DEBUGREGS") : null,
            Msrs = ReadMsrs(vcpu, msrIndices),
            Lapic = irqchip ? vcpu.GetLapic() : null,
            Events = vcpu.GetVcpuEvents(),
            MpState = irqchip ? vcpu.GetMpState() : null,
        };
    }

    /// <summary>
    /// KVM_GET_MSRS over the whole index list. KVM stops at the first MSR it cannot read and returns how
    /// many it read, so an unreadable one is dropped and the read goes on after it.
    /// </summary>
    public static kvm_msr_entry[] ReadMsrs(KvmVcpu vcpu, uint[] indices)
    {
        var result = new List<kvm_msr_entry>(indices.Length);
        var buffer = new kvm_msr_entry[indices.Length];
        int next = 0;
        while (next < indices.Length)
        {
            int count = indices.Length - next;
            for (int i = 0; i < count; i++) buffer[i] = new kvm_msr_entry { index = indices[next + i] };
            int read = vcpu.GetMsrs(buffer.AsSpan(0, count));
            for (int i = 0; i < read; i++) result.Add(buffer[i]);
            next += read + 1; // skip the one KVM refused (if any)
        }
        return [.. result];
    }

    /// <summary>
    /// Sets a vCPU's saved state. Order: (CPUID was set at vCPU creation) MSRs, sregs (with APIC base),
    /// regs, FPU, XSAVE, XCRs, debug registers, LAPIC, TSC deadline again, events, MP state.
    /// </summary>
    public static void ApplyVcpu(VirtualMachine machine, VcpuState s)
    {
        var vcpu = machine.Vcpus[s.Id];
        var vm = machine.Kvm;
        SetMsrs(vcpu, s.Msrs, machine.Logger);
        vcpu.SetSregs(s.Sregs);
        vcpu.SetRegs(s.Regs);
        vcpu.SetFpu(s.Fpu);
        if (s.Xsave is { } xsave)
        {
            if (Has(vm, KVM_CAP_XSAVE)) vcpu.SetXsave(xsave);
            else SnapshotLog.NoXsaveOnHost(machine.Logger, s.Id);
        }
        if (s.Xcrs is { } xcrs && Has(vm, KVM_CAP_XCRS)) vcpu.SetXcrs(xcrs);
        if (s.DebugRegs is { } debug) vcpu.SetDebugRegs(debug);
        if (s.Lapic is { } lapic)
        {
            vcpu.SetLapic(lapic);
            foreach (var m in s.Msrs)
                if (m.index == MsrTscDeadline) SetMsrs(vcpu, [m], machine.Logger);
        }
        var events = s.Events;
        events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
        vcpu.SetVcpuEvents(events);
        if (s.MpState is { } mp) vcpu.SetMpState(mp);
    }

    /// <summary>KVM_SET_MSRS in one call; if KVM refuses one, the MSRs go one by one and refused ones are logged.</summary>
    private static void SetMsrs(KvmVcpu vcpu, ReadOnlySpan<kvm_msr_entry> msrs, ILogger log)
    {
        if (msrs.IsEmpty) return;
        try
        {
            vcpu.SetMsrs(msrs);
            return;
        }
        catch (KvmException) { }
        foreach (var m in msrs)
        {
            try { vcpu.SetMsrs([m]); }
            catch (KvmException) { SnapshotLog.MsrRefused(log, vcpu.Id, m.index, m.data); }
        }
    }

    private static bool Has(KvmVm vm, uint cap)
    {
        try { return vm.CheckExtension(cap) > 0; }
        catch (KvmException) { return false; }
    }

    private static T? Optional<T>(Func<T> get, ILogger log, string what) where T : struct
    {
        try { return get(); }
        catch (KvmException e)
        {
            SnapshotLog.StateNotSaved(log, what, e.Message);
            return null;
        }
    }
}
