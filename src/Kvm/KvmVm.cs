using FireSharp.Kvm.Interop;
using static FireSharp.Kvm.Interop.KvmIoctls;

namespace FireSharp.Kvm;

/// <summary>A KVM VM fd: memory slots, the in-kernel irqchip and PIT, interrupt lines, irqfd/ioeventfd.</summary>
public sealed unsafe class KvmVm : IDisposable
{
    private readonly VmHandle _handle;

    internal KvmVm(KvmSystem system, VmHandle handle)
    {
        System = system;
        _handle = handle;
    }

    public KvmSystem System { get; }

    /// <summary>KVM_CHECK_EXTENSION on the VM fd (some answers are per-VM).</summary>
    public int CheckExtension(uint capability) => Sys.Ioctl(_handle, KVM_CHECK_EXTENSION, capability, nameof(KVM_CHECK_EXTENSION));

    /// <summary>Registers one region of guest RAM as a KVM memory slot (its host mapping stays inside this layer).</summary>
    public void SetUserMemoryRegion(FireSharp.Memory.GuestRegion region, uint flags = 0) =>
        SetUserMemoryRegion((uint)region.Slot, region.GuestAddress, region.Size, region.HostAddress, flags);

    public void SetUserMemoryRegion(uint slot, ulong guestPhysAddr, ulong size, nint hostAddress, uint flags = 0)
    {
        var region = new kvm_userspace_memory_region
        {
            slot = slot,
            flags = flags,
            guest_phys_addr = guestPhysAddr,
            memory_size = size,
            userspace_addr = (ulong)hostAddress,
        };
        Sys.Ioctl(_handle, KVM_SET_USER_MEMORY_REGION, &region, nameof(KVM_SET_USER_MEMORY_REGION));
    }

    /// <summary>Three pages of guest physical space KVM needs on Intel for the real-mode TSS.</summary>
    public void SetTssAddress(ulong gpa) => Sys.Ioctl(_handle, KVM_SET_TSS_ADDR, gpa, nameof(KVM_SET_TSS_ADDR));

    /// <summary>One page for the EPT identity map on Intel; must not overlap the TSS pages.</summary>
    public void SetIdentityMapAddress(ulong gpa) => Sys.Ioctl(_handle, KVM_SET_IDENTITY_MAP_ADDR, &gpa, nameof(KVM_SET_IDENTITY_MAP_ADDR));

    /// <summary>Creates the in-kernel PIC pair, IOAPIC and per-vCPU LAPICs. Must precede vCPU creation.</summary>
    public void CreateIrqchip() => Sys.Ioctl(_handle, KVM_CREATE_IRQCHIP, 0, nameof(KVM_CREATE_IRQCHIP));

    public void CreatePit2(uint flags = KvmConstants.KVM_PIT_SPEAKER_DUMMY)
    {
        var config = new kvm_pit_config { flags = flags };
        Sys.Ioctl(_handle, KVM_CREATE_PIT2, &config, nameof(KVM_CREATE_PIT2));
    }

    /// <summary>Drives a GSI of the in-kernel irqchip to a level.</summary>
    public void IrqLine(uint gsi, bool high)
    {
        var level = new kvm_irq_level { irq = gsi, level = high ? 1u : 0u };
        Sys.Ioctl(_handle, KVM_IRQ_LINE, &level, nameof(KVM_IRQ_LINE));
    }

    /// <summary>Binds an eventfd to a GSI: a write to the eventfd injects an edge on the GSI without an exit.</summary>
    public void AssignIrqfd(int eventFd, uint gsi, bool deassign = false)
    {
        var irqfd = new kvm_irqfd { fd = (uint)eventFd, gsi = gsi, flags = deassign ? KvmConstants.KVM_IRQFD_FLAG_DEASSIGN : 0 };
        Sys.Ioctl(_handle, KVM_IRQFD, &irqfd, nameof(KVM_IRQFD));
    }

    /// <summary>
    /// Binds an eventfd to a guest write at an MMIO (or port, with <paramref name="pio"/>) address: the
    /// write signals the eventfd inside KVM and never exits to userspace.
    /// </summary>
    public void AssignIoeventfd(int eventFd, ulong address, uint length, ulong? dataMatch = null, bool pio = false, bool deassign = false)
    {
        uint flags = 0;
        if (dataMatch is not null) flags |= KvmConstants.KVM_IOEVENTFD_FLAG_DATAMATCH;
        if (pio) flags |= KvmConstants.KVM_IOEVENTFD_FLAG_PIO;
        if (deassign) flags |= KvmConstants.KVM_IOEVENTFD_FLAG_DEASSIGN;
        var ioeventfd = new kvm_ioeventfd { datamatch = dataMatch ?? 0, addr = address, len = length, fd = eventFd, flags = flags };
        Sys.Ioctl(_handle, KVM_IOEVENTFD, &ioeventfd, nameof(KVM_IOEVENTFD));
    }

    public kvm_irqchip GetIrqchip(uint chipId)
    {
        var chip = new kvm_irqchip { chip_id = chipId };
        Sys.Ioctl(_handle, KVM_GET_IRQCHIP, &chip, nameof(KVM_GET_IRQCHIP));
        return chip;
    }

    public void SetIrqchip(in kvm_irqchip chip)
    {
        fixed (kvm_irqchip* p = &chip) Sys.Ioctl(_handle, KVM_SET_IRQCHIP, p, nameof(KVM_SET_IRQCHIP));
    }

    public kvm_pit_state2 GetPit2()
    {
        kvm_pit_state2 state;
        Sys.Ioctl(_handle, KVM_GET_PIT2, &state, nameof(KVM_GET_PIT2));
        return state;
    }

    public void SetPit2(in kvm_pit_state2 state)
    {
        fixed (kvm_pit_state2* p = &state) Sys.Ioctl(_handle, KVM_SET_PIT2, p, nameof(KVM_SET_PIT2));
    }

    public kvm_clock_data GetClock()
    {
        kvm_clock_data clock;
        Sys.Ioctl(_handle, KVM_GET_CLOCK, &clock, nameof(KVM_GET_CLOCK));
        return clock;
    }

    public void SetClock(in kvm_clock_data clock)
    {
        fixed (kvm_clock_data* p = &clock) Sys.Ioctl(_handle, KVM_SET_CLOCK, p, nameof(KVM_SET_CLOCK));
    }

    public void EnableCap(uint capability, ulong arg0 = 0)
    {
        var cap = new kvm_enable_cap { cap = capability };
        cap.args[0] = arg0;
        Sys.Ioctl(_handle, KVM_ENABLE_CAP, &cap, nameof(KVM_ENABLE_CAP));
    }

    /// <summary>Fetches and clears the dirty-page bitmap of a slot created with KVM_MEM_LOG_DIRTY_PAGES.</summary>
    public void GetDirtyLog(uint slot, Span<ulong> bitmap)
    {
        fixed (ulong* p = bitmap)
        {
            var log = new kvm_dirty_log { slot = slot, dirty_bitmap = (ulong)p };
            Sys.Ioctl(_handle, KVM_GET_DIRTY_LOG, &log, nameof(KVM_GET_DIRTY_LOG));
        }
    }

    public KvmVcpu CreateVcpu(int id)
    {
        int fd = Sys.Ioctl(_handle, KVM_CREATE_VCPU, (ulong)id, nameof(KVM_CREATE_VCPU));
        var handle = new VcpuHandle(fd);
        try
        {
            return new KvmVcpu(id, handle, System.VcpuMmapSize);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public void Dispose() => _handle.Dispose();
}
