using FireSharp.Devices;
using FireSharp.Kvm;

namespace FireSharp.Vm;

/// <summary>A GSI of the in-kernel irqchip driven with KVM_IRQ_LINE.</summary>
public sealed class KvmInterruptLine(KvmVm vm, uint gsi) : IInterruptLine
{
    public uint Gsi { get; } = gsi;

    public void SetLevel(bool high) => vm.IrqLine(Gsi, high);

    public void Pulse()
    {
        vm.IrqLine(Gsi, true);
        vm.IrqLine(Gsi, false);
    }
}
