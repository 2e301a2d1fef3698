using System.Runtime.CompilerServices;
using FireSharp.Kvm.Interop;
using static FireSharp.Kvm.Interop.KvmIoctls;

namespace FireSharp.Kvm;

/// <summary>Result of one KVM_RUN call.</summary>
public enum RunResult
{
    /// <summary>The guest exited; read <see cref="KvmVcpu.ExitReason"/>.</summary>
    Exit,
    /// <summary>KVM_RUN returned EINTR (a signal or immediate_exit) or EAGAIN; no exit data.</summary>
    Interrupted,
}

/// <summary>A vCPU fd and its mmap'ed <c>struct kvm_run</c>.</summary>
public sealed unsafe class KvmVcpu : IDisposable
{
    private readonly VcpuHandle _handle;
    private readonly byte* _run;
    private readonly int _runSize;
    private int _disposed;

    internal KvmVcpu(int id, VcpuHandle handle, int mmapSize)
    {
        Id = id;
        _handle = handle;
        _runSize = mmapSize;
        nint p = Mman.Map(0, (nuint)mmapSize, Mman.ProtRead | Mman.ProtWrite, Mman.MapShared, handle.Fd, 0);
        if (p == Mman.MapFailed) throw new KvmException("mmap(kvm_run)", Errno.Last);
        _run = (byte*)p;
    }

    public int Id { get; }

    /// <summary>
    /// Enters the guest. EINTR/EAGAIN are returned as <see cref="RunResult.Interrupted"/>, never thrown:
    /// the runtime's own signals can land here and the caller decides whether to re-enter.
    /// </summary>
    public RunResult Run()
    {
        int rc = Ioctl.Invoke(_handle.Fd, KVM_RUN, null);
        if (rc >= 0) return RunResult.Exit;
        int err = Errno.Last;
        if (err is Errno.EINTR or Errno.EAGAIN) return RunResult.Interrupted;
        throw new KvmException(nameof(KVM_RUN), err);
    }

    /// <summary>kvm_run.immediate_exit: when set, KVM_RUN returns EINTR without entering the guest.</summary>
    public bool ImmediateExit
    {
        get => Volatile.Read(ref _run[KvmRunOffsets.immediate_exit]) != 0;
        set => Volatile.Write(ref _run[KvmRunOffsets.immediate_exit], value ? (byte)1 : (byte)0);
    }

    public uint ExitReason => Field<uint>(KvmRunOffsets.exit_reason);

    // KVM_EXIT_IO
    public byte IoDirection => Field<byte>(KvmRunOffsets.io_direction);
    public byte IoSize => Field<byte>(KvmRunOffsets.io_size);
    public ushort IoPort => Field<ushort>(KvmRunOffsets.io_port);
    public uint IoCount => Field<uint>(KvmRunOffsets.io_count);

    /// <summary>The I/O data buffer inside the kvm_run page (size × count bytes), bounds-checked against the mapping.</summary>
    public Span<byte> IoData
    {
        get
        {
            ulong offset = Field<ulong>(KvmRunOffsets.io_data_offset);
            ulong length = (ulong)IoSize * IoCount;
            if (offset > (ulong)_runSize || length > (ulong)_runSize - offset)
                throw new KvmException("KVM_EXIT_IO", 0, $"data_offset {offset} + {length} outside the {_runSize}-byte kvm_run mapping");
            return new Span<byte>(_run + offset, (int)length);
        }
    }

    // KVM_EXIT_MMIO
    public ulong MmioAddress => Field<ulong>(KvmRunOffsets.mmio_phys_addr);
    public bool MmioIsWrite => Field<byte>(KvmRunOffsets.mmio_is_write) != 0;
    public Span<byte> MmioData => new(_run + KvmRunOffsets.mmio_data, (int)Math.Min(8u, Field<uint>(KvmRunOffsets.mmio_len)));

    // KVM_EXIT_FAIL_ENTRY
    public ulong FailEntryReason => Field<ulong>(KvmRunOffsets.fail_entry_hardware_entry_failure_reason);

    // KVM_EXIT_INTERNAL_ERROR
    public uint InternalSuberror => Field<uint>(KvmRunOffsets.internal_suberror);
    public ReadOnlySpan<ulong> InternalData =>
        new(_run + KvmRunOffsets.internal_data, (int)Math.Min(16u, Field<uint>(KvmRunOffsets.internal_ndata)));

    // KVM_EXIT_SYSTEM_EVENT
    public uint SystemEventType => Field<uint>(KvmRunOffsets.system_event_type);

    private T Field<T>(int offset) where T : unmanaged => Unsafe.ReadUnaligned<T>(_run + offset);

    /// <summary>The guest's TSC rate in kHz (KVM_GET_TSC_KHZ): what a guest's rdtsc ticks mean in time.</summary>
    public uint TscKhz => (uint)Sys.Ioctl(_handle, KVM_GET_TSC_KHZ, 0UL, nameof(KVM_GET_TSC_KHZ));

    public kvm_regs GetRegs() { kvm_regs r; Sys.Ioctl(_handle, KVM_GET_REGS, &r, nameof(KVM_GET_REGS)); return r; }
    public void SetRegs(in kvm_regs r) { fixed (kvm_regs* p = &r) Sys.Ioctl(_handle, KVM_SET_REGS, p, nameof(KVM_SET_REGS)); }
    public kvm_sregs GetSregs() { kvm_sregs s; Sys.Ioctl(_handle, KVM_GET_SREGS, &s, nameof(KVM_GET_SREGS)); return s; }
    public void SetSregs(in kvm_sregs s) { fixed (kvm_sregs* p = &s) Sys.Ioctl(_handle, KVM_SET_SREGS, p, nameof(KVM_SET_SREGS)); }
    public kvm_fpu GetFpu() { kvm_fpu f; Sys.Ioctl(_handle, KVM_GET_FPU, &f, nameof(KVM_GET_FPU)); return f; }
    public void SetFpu(in kvm_fpu f) { fixed (kvm_fpu* p = &f) Sys.Ioctl(_handle, KVM_SET_FPU, p, nameof(KVM_SET_FPU)); }
    public kvm_lapic_state GetLapic() { kvm_lapic_state l; Sys.Ioctl(_handle, KVM_GET_LAPIC, &l, nameof(KVM_GET_LAPIC)); return l; }
    public void SetLapic(in kvm_lapic_state l) { fixed (kvm_lapic_state* p = &l) Sys.Ioctl(_handle, KVM_SET_LAPIC, p, nameof(KVM_SET_LAPIC)); }
    public kvm_vcpu_events GetVcpuEvents() { kvm_vcpu_events e; Sys.Ioctl(_handle, KVM_GET_VCPU_EVENTS, &e, nameof(KVM_GET_VCPU_EVENTS)); return e; }
    public void SetVcpuEvents(in kvm_vcpu_events e) { fixed (kvm_vcpu_events* p = &e) Sys.Ioctl(_handle, KVM_SET_VCPU_EVENTS, p, nameof(KVM_SET_VCPU_EVENTS)); }
    public uint GetMpState() { kvm_mp_state m; Sys.Ioctl(_handle, KVM_GET_MP_STATE, &m, nameof(KVM_GET_MP_STATE)); return m.mp_state; }
    public void SetMpState(uint state) { var m = new kvm_mp_state { mp_state = state }; Sys.Ioctl(_handle, KVM_SET_MP_STATE, &m, nameof(KVM_SET_MP_STATE)); }
    public kvm_debugregs GetDebugRegs() { kvm_debugregs d; Sys.Ioctl(_handle, KVM_GET_DEBUGREGS, &d, nameof(KVM_GET_DEBUGREGS)); return d; }
    public void SetDebugRegs(in kvm_debugregs d) { fixed (kvm_debugregs* p = &d) Sys.Ioctl(_handle, KVM_SET_DEBUGREGS, p, nameof(KVM_SET_DEBUGREGS)); }
    public kvm_xsave GetXsave() { kvm_xsave x; Sys.Ioctl(_handle, KVM_GET_XSAVE, &x, nameof(KVM_GET_XSAVE)); return x; }
    public void SetXsave(in kvm_xsave x) { fixed (kvm_xsave* p = &x) Sys.Ioctl(_handle, KVM_SET_XSAVE, p, nameof(KVM_SET_XSAVE)); }
    public kvm_xcrs GetXcrs() { kvm_xcrs x; Sys.Ioctl(_handle, KVM_GET_XCRS, &x, nameof(KVM_GET_XCRS)); return x; }
    public void SetXcrs(in kvm_xcrs x) { fixed (kvm_xcrs* p = &x) Sys.Ioctl(_handle, KVM_SET_XCRS, p, nameof(KVM_SET_XCRS)); }

    /// <summary>Translates a guest virtual address with the vCPU's current paging mode.</summary>
    public bool TryTranslate(ulong linear, out ulong physical)
    {
        var t = new kvm_translation { linear_address = linear };
        Sys.Ioctl(_handle, KVM_TRANSLATE, &t, nameof(KVM_TRANSLATE));
        physical = t.physical_address;
        return t.valid != 0;
    }

    public void SetCpuid(ReadOnlySpan<kvm_cpuid_entry2> entries)
    {
        int bytes = sizeof(kvm_cpuid2) + entries.Length * sizeof(kvm_cpuid_entry2);
        byte* buf = stackalloc byte[bytes];
        ((kvm_cpuid2*)buf)->nent = (uint)entries.Length;
        ((kvm_cpuid2*)buf)->padding = 0;
        entries.CopyTo(new Span<kvm_cpuid_entry2>(buf + sizeof(kvm_cpuid2), entries.Length));
        Sys.Ioctl(_handle, KVM_SET_CPUID2, buf, nameof(KVM_SET_CPUID2));
    }

    /// <summary>KVM_SET_MSRS; throws if KVM accepted fewer entries than given (it stops at the first bad one).</summary>
    public void SetMsrs(ReadOnlySpan<kvm_msr_entry> entries)
    {
        int bytes = sizeof(kvm_msrs) + entries.Length * sizeof(kvm_msr_entry);
        byte* buf = stackalloc byte[bytes];
        *(kvm_msrs*)buf = new kvm_msrs { nmsrs = (uint)entries.Length };
        entries.CopyTo(new Span<kvm_msr_entry>(buf + sizeof(kvm_msrs), entries.Length));
        int n = Sys.Ioctl(_handle, KVM_SET_MSRS, buf, nameof(KVM_SET_MSRS));
        if (n != entries.Length)
            throw new KvmException(nameof(KVM_SET_MSRS), 0, $"KVM set {n} of {entries.Length} MSRs; MSR 0x{entries[n].index:x} was refused");
    }

    /// <summary>KVM_GET_MSRS for the given indices; returns how many were read (KVM stops at the first unsupported one).</summary>
    public int GetMsrs(Span<kvm_msr_entry> entries)
    {
        int bytes = sizeof(kvm_msrs) + entries.Length * sizeof(kvm_msr_entry);
        byte* buf = stackalloc byte[bytes];
        *(kvm_msrs*)buf = new kvm_msrs { nmsrs = (uint)entries.Length };
        var body = new Span<kvm_msr_entry>(buf + sizeof(kvm_msrs), entries.Length);
        entries.CopyTo(body);
        int n = Sys.Ioctl(_handle, KVM_GET_MSRS, buf, nameof(KVM_GET_MSRS));
        body.CopyTo(entries);
        return n;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _ = Mman.Unmap((nint)_run, (nuint)_runSize); // fails only on a bug (EINVAL); nothing to do in Dispose
        _handle.Dispose();
    }
}
