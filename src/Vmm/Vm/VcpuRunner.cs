using FireSharp.Boot;
using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using Microsoft.Extensions.Logging;
using static FireSharp.Kvm.Interop.KvmConstants;

namespace FireSharp.Vm;

/// <summary>One vCPU's thread: KVM_RUN in a loop, dispatching exits to the machine's buses.</summary>
internal sealed class VcpuRunner(VirtualMachine machine, KvmVcpu vcpu)
{
    private Thread? _thread;
    private nuint _pthread;
    private int _int3Fixups, _fwaitFixups;
    private bool _entered;
    private long _ioExits, _mmioExits, _interruptedExits, _otherExits;

    /// <summary>The last exit was I/O or MMIO: KVM finishes that instruction only on the next KVM_RUN.</summary>
    private bool _completionPending;

    public KvmVcpu Vcpu { get; } = vcpu;

    /// <summary>KVM_RUN returns so far, by reason (read from any thread; each counter is written by this vCPU's thread only).</summary>
    public VcpuExitCounts ExitCounts => new(Interlocked.Read(ref _ioExits), Interlocked.Read(ref _mmioExits),
        Interlocked.Read(ref _interruptedExits), Interlocked.Read(ref _otherExits));

    public void Start()
    {
        Signals.EnsureKickHandler();
        _thread = new Thread(ThreadMain) { Name = $"vcpu{Vcpu.Id}", IsBackground = true };
        _thread.Start();
    }

    /// <summary>
    /// Makes the vCPU leave KVM_RUN soon: immediate_exit covers the window before it enters the guest,
    /// the signal covers the time inside it.
    /// </summary>
    public void Kick()
    {
        Vcpu.ImmediateExit = true;
        nuint t = Volatile.Read(ref _pthread);
        if (t != 0) Signals.Kick(t);
    }

    private void ThreadMain()
    {
        Volatile.Write(ref _pthread, Signals.PthreadSelf());
        try
        {
            while (!machine.StopRequested)
            {
                if (machine.PauseRequested)
                {
                    if (CompletePendingExit() is { } failed)
                    {
                        machine.RequestExit(failed);
                        break;
                    }
                    machine.OnVcpuPaused();
                    continue;
                }
                if (!_entered)
                {
                    _entered = true;
                    machine.OnFirstGuestEntry(System.Diagnostics.Stopwatch.GetTimestamp());
                }
                _completionPending = false;
                if (Vcpu.Run() == RunResult.Interrupted)
                {
                    Interlocked.Increment(ref _interruptedExits);
                    Vcpu.ImmediateExit = false;
                    // Full fence: the pause/stop flags must be read after immediate_exit is cleared, or a
                    // kick that lands in between could be lost (see Kick).
                    Interlocked.MemoryBarrier();
                    continue;
                }
                if (HandleExit() is { } exit)
                {
                    machine.RequestExit(exit);
                    break;
                }
            }
        }
        catch (Exception e)
        {
            machine.RequestExit(new VmExit(VmExitKind.VmmError, e.Message, Vcpu.Id));
        }
        finally
        {
            Volatile.Write(ref _pthread, 0);
            machine.OnVcpuThreadExit();
        }
    }

    /// <summary>
    /// Before parking for a pause: an I/O or MMIO exit is complete (the value of an IN or MMIO read
    /// written to the guest's registers, RIP advanced) only once KVM_RUN is entered again, and that
    /// pending state is invisible to KVM_GET_REGS. So re-enter with immediate_exit set: KVM finishes
    /// the instruction and returns EINTR without running the guest further. Then the vCPU state read
    /// during the pause (snapshots) is consistent.
    /// </summary>
    private VmExit? CompletePendingExit()
    {
        while (_completionPending)
        {
            _completionPending = false;
            Vcpu.ImmediateExit = true;
            if (Vcpu.Run() == RunResult.Interrupted) break;
            // A multi-part MMIO access can exit again for its next fragment: handle it and go round.
            if (HandleExit() is { } exit) return exit;
        }
        Vcpu.ImmediateExit = false;
        Interlocked.MemoryBarrier();
        return null;
    }

    /// <summary>Handles the current exit; returns a reason when the VM must end.</summary>
    private VmExit? HandleExit()
    {
        if (Vcpu.ExitReason is not (KVM_EXIT_IO or KVM_EXIT_MMIO or KVM_EXIT_INTR)) Interlocked.Increment(ref _otherExits);
        switch (Vcpu.ExitReason)
        {
            case KVM_EXIT_IO:
                Interlocked.Increment(ref _ioExits);
                HandleIo();
                _completionPending = true;
                return null;
            case KVM_EXIT_MMIO:
                Interlocked.Increment(ref _mmioExits);
                HandleMmio();
                _completionPending = true;
                return null;
            case KVM_EXIT_INTR:
                Interlocked.Increment(ref _interruptedExits);
                return null;
            case KVM_EXIT_HLT:
                return new VmExit(VmExitKind.Halt, $"guest halted (HLT) at rip=0x{Vcpu.GetRegs().rip:x}", Vcpu.Id);
            case KVM_EXIT_SHUTDOWN:
                return new VmExit(VmExitKind.TripleFault, $"triple fault (KVM_EXIT_SHUTDOWN) at rip=0x{Vcpu.GetRegs().rip:x}", Vcpu.Id);
            case KVM_EXIT_FAIL_ENTRY:
                return new VmExit(VmExitKind.FailEntry, $"KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x{Vcpu.FailEntryReason:x})", Vcpu.Id);
            case KVM_EXIT_SYSTEM_EVENT:
                return Vcpu.SystemEventType switch
                {
                    KVM_SYSTEM_EVENT_SHUTDOWN => new VmExit(VmExitKind.PowerOff, "guest powered off", Vcpu.Id),
                    KVM_SYSTEM_EVENT_RESET => new VmExit(VmExitKind.Reset, "guest reset", Vcpu.Id),
                    KVM_SYSTEM_EVENT_CRASH => new VmExit(VmExitKind.GuestCrash, "guest reported a crash", Vcpu.Id),
                    var t => new VmExit(VmExitKind.VmmError, $"unknown KVM system event {t}", Vcpu.Id),
                };
            case KVM_EXIT_INTERNAL_ERROR:
                return HandleInternalError();
            case var reason:
                return new VmExit(VmExitKind.VmmError, $"unexpected KVM exit reason {reason} at rip=0x{Vcpu.GetRegs().rip:x}", Vcpu.Id);
        }
    }

    private void HandleIo()
    {
        var data = Vcpu.IoData;
        int size = Vcpu.IoSize;
        ushort port = Vcpu.IoPort;
        bool output = Vcpu.IoDirection == KVM_EXIT_IO_OUT;
        for (int off = 0; off + size <= data.Length; off += size)
        {
            var item = data.Slice(off, size);
            if (output) machine.PortBus.Write(port, item);
            else if (!machine.PortBus.Read(port, item)) item.Fill(0xff); // unclaimed ports float high
        }
    }

    private void HandleMmio()
    {
        var data = Vcpu.MmioData;
        ulong address = Vcpu.MmioAddress;
        if (Vcpu.MmioIsWrite) machine.MmioBus.Write(address, data);
        else if (!machine.MmioBus.Read(address, data)) data.Fill(0xff);
    }

    /// <summary>
    /// On PVM, KVM's emulator runs all guest kernel code and lacks a few instructions. The one-byte ones
    /// have simple semantics, so FireSharp completes them: int3 becomes an injected #BP (the guest's
    /// handler then runs as on hardware) and fwait, with no x87 exception pending, is a no-op.
    /// </summary>
    private VmExit? HandleInternalError()
    {
        uint sub = Vcpu.InternalSuberror;
        var regs = Vcpu.GetRegs();
        if (machine.IsPvm && sub == KVM_INTERNAL_ERROR_EMULATION && TryReadCodeByte(regs.rip, out byte op))
        {
            if (op == PvmQuirks.Int3)
            {
                if (_int3Fixups++ == 0)
                    VmLog.PvmInt3(machine.Logger, Vcpu.Id, regs.rip);
                regs.rip += 1;
                Vcpu.SetRegs(regs);
                var events = Vcpu.GetVcpuEvents();
                events.exception_injected = 1;
                events.exception_nr = 3;
                events.exception_has_error_code = 0;
                events.exception_pending = 0;
                events.flags = 0;
                Vcpu.SetVcpuEvents(events);
                return null;
            }
            if (op == PvmQuirks.Fwait)
            {
                if (_fwaitFixups++ == 0)
                    VmLog.PvmFwait(machine.Logger, Vcpu.Id, regs.rip);
                regs.rip += 1;
                Vcpu.SetRegs(regs);
                return null;
            }
        }
        string bytes = TryReadCode(regs.rip, 8, out var code) ? Convert.ToHexString(code) : "unreadable";
        string data = string.Join(' ', Vcpu.InternalData.ToArray().Select(d => $"0x{d:x}"));
        string what = sub == KVM_INTERNAL_ERROR_EMULATION ? "instruction emulation failed" : $"suberror {sub}";
        return new VmExit(VmExitKind.InternalError, $"KVM internal error: {what} at rip=0x{regs.rip:x} (code {bytes}; data {data})", Vcpu.Id);
    }

    private bool TryReadCodeByte(ulong rip, out byte value)
    {
        value = 0;
        if (!TryReadCode(rip, 1, out var b)) return false;
        value = b[0];
        return true;
    }

    private bool TryReadCode(ulong rip, int length, out byte[] code)
    {
        code = [];
        try
        {
            if (!Vcpu.TryTranslate(rip, out ulong gpa)) return false;
            if (!machine.Memory.TryGetSpan(gpa, length, out var span)) return false;
            code = span.ToArray();
            return true;
        }
        catch (KvmException)
        {
            return false;
        }
    }
}
