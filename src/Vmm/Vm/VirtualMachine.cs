// Over 400 lines: the VM fd, its memory slots, vCPU threads and the ordered teardown that keeps memory mapped
// for stuck vCPUs belong together; MachineOptions and VmState are small types kept beside it.
using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Vm;

/// <summary>What a VM is made of, before any device or kernel is added.</summary>
public sealed record MachineOptions
{
    public const ulong MinMemoryBytes = 1 * MemoryLayout.MiB;
    public const ulong MaxMemoryBytes = 1024 * MemoryLayout.GiB;

    public required ulong MemoryBytes { get; init; }
    public int VcpuCount { get; init; } = 1;

    /// <summary>In-kernel PIC/IOAPIC/LAPIC and PIT. Without it HLT exits to the VMM (and ends the VM).</summary>
    public bool InKernelIrqchip { get; init; } = true;

    /// <summary>Apply the PVM workarounds; null = detect from the host.</summary>
    public bool? Pvm { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>How long <see cref="VirtualMachine.Stop"/> (and so Dispose) waits for the vCPU threads to end.</summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

public enum VmState { Created, Running, Paused, Exited }

/// <summary>Why a machine configuration was refused. One reason per distinct fix.</summary>
public enum MachineConfigError
{
    /// <summary>The memory size is outside what a machine may have (1 MiB..1 TiB).</summary>
    MemorySizeOutOfRange,
    /// <summary>The memory size is not a multiple of 4 KiB.</summary>
    MemoryNotPageAligned,
    /// <summary>More memory than the host has: the request is well-formed, the host cannot provide it.</summary>
    MemoryExceedsHost,
    /// <summary>Restored guest memory is not the size the machine records.</summary>
    MemoryMismatch,
    /// <summary>A vCPU count below 1 or above what the machine can address (254 xAPIC ids).</summary>
    VcpuCountOutOfRange,
    /// <summary>More vCPUs than this host's KVM allows: the request is well-formed, the host cannot provide it.</summary>
    VcpusExceedHost,
    /// <summary>A restore with a CPUID table count other than the vCPU count.</summary>
    CpuidMismatch,
}

/// <summary>
/// Thrown for an invalid machine configuration (memory size, vCPU count), before anything is created.
/// <see cref="Reason"/> is for code that branches on the cause; <see cref="Field"/> ("mem" or "vcpus") follows from it.
/// </summary>
public sealed class MachineConfigException(MachineConfigError reason, string message)
    : Exception($"{FieldOf(reason)}: {message}")
{
    public const string MemoryField = "mem", VcpusField = "vcpus";

    public MachineConfigError Reason { get; } = reason;

    /// <summary>The input at fault: <see cref="MemoryField"/> or <see cref="VcpusField"/>.</summary>
    public string Field => FieldOf(Reason);

    /// <summary>The message without the field prefix.</summary>
    public string Detail { get; } = message;

    /// <summary>True when the host, not the request, is the limit (more memory or vCPUs than it has).</summary>
    public bool IsHostLimit => Reason is MachineConfigError.MemoryExceedsHost or MachineConfigError.VcpusExceedHost;

    private static string FieldOf(MachineConfigError reason) => reason switch
    {
        MachineConfigError.VcpuCountOutOfRange or MachineConfigError.VcpusExceedHost or MachineConfigError.CpuidMismatch => VcpusField,
        _ => MemoryField,
    };
}

/// <summary>
/// A KVM VM with its guest memory, port-I/O and MMIO buses and vCPU threads. Devices are added to the
/// buses by whoever builds the machine; they never see this class. Pause/resume/stop may be called
/// from any thread. Dispose releases every fd, mapping and thread; a vCPU thread that does not stop in time
/// keeps its kvm_run page and the guest memory mapped until it ends (see <see cref="Dispose"/>).
/// </summary>
public sealed class VirtualMachine : IDisposable
{
    /// <summary>KVM's Intel real-mode TSS (three pages) and EPT identity-map page, at the top of the MMIO gap.</summary>
    public const ulong TssAddress = 0xfffb_d000, IdentityMapAddress = 0xfffb_c000;

    private readonly KvmSystem _kvm;
    private readonly VcpuRunner[] _runners;
    private readonly kvm_cpuid_entry2[][] _cpuid;
    private readonly object _stateLock = new(); // a Monitor, for Wait/PulseAll
    private readonly Lock _kickLock = new(); // kicks touch each vCPU's kvm_run mapping: not after Dispose unmapped it
    private bool _vcpusDisposed;
    private readonly ManualResetEventSlim _resumeEvent = new(true);
    private readonly TaskCompletionSource<VmExit> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private VmExit? _exit;
    private int _pausedCount;
    private volatile bool _pauseRequested;
    private volatile bool _stopRequested;
    private int _runningThreads;
    private long _firstEntryTimestamp;
    private VmState _state = VmState.Created;
    private bool _disposed;

    private VirtualMachine(MachineOptions options, KvmSystem kvm, KvmVm vm, GuestMemory memory, bool pvm)
    {
        Options = options;
        Logger = options.Logger;
        _kvm = kvm;
        Kvm = vm;
        Memory = memory;
        IsPvm = pvm;
        _runners = new VcpuRunner[options.VcpuCount];
        _cpuid = new kvm_cpuid_entry2[options.VcpuCount][];
    }

    public MachineOptions Options { get; }
    public ILogger Logger { get; }
    public KvmVm Kvm { get; }
    public GuestMemory Memory { get; }
    public bool IsPvm { get; }
    public DeviceBus PortBus { get; } = new("port I/O");
    public DeviceBus MmioBus { get; } = new("MMIO");
    /// <summary>KVM exits of all vCPUs so far (see <see cref="VcpuExitCounts"/>).</summary>
    public VcpuExitCounts ExitCounts
    {
        get
        {
            var sum = default(VcpuExitCounts);
            foreach (var r in _runners) if (r is not null) sum = sum.Add(r.ExitCounts);
            return sum;
        }
    }

    public IReadOnlyList<KvmVcpu> Vcpus => [.. _runners.Select(r => r.Vcpu)];

    /// <summary>The CPUID table given to vCPU <paramref name="index"/> (KVM_SET_CPUID2), for snapshots.</summary>
    public IReadOnlyList<kvm_cpuid_entry2> VcpuCpuid(int index) => _cpuid[index];

    /// <summary>
    /// <see cref="System.Diagnostics.Stopwatch"/> timestamp of the first KVM_RUN of any vCPU (the guest started running),
    /// or 0 before that. Restore latency is measured to this point.
    /// </summary>
    public long FirstGuestEntryTimestamp => Interlocked.Read(ref _firstEntryTimestamp);

    public VmState State { get { lock (_stateLock) return _state; } }

    /// <summary>Completes when every vCPU thread has ended, with the first reason recorded.</summary>
    public Task<VmExit> Exited => _exited.Task;

    internal bool PauseRequested => _pauseRequested;
    internal bool StopRequested => _stopRequested;

    /// <summary>Whether KVM logs the guest's writes to RAM (KVM_MEM_LOG_DIRTY_PAGES on every memory slot), for diff snapshots.</summary>
    public bool DirtyLogging { get; private set; }

    /// <summary>Turns KVM's dirty-page logging on or off for every RAM slot (re-registers the slots with the flag).</summary>
    public void SetDirtyLogging(bool enabled)
    {
        uint flags = enabled ? FireSharp.Kvm.Interop.KvmConstants.KVM_MEM_LOG_DIRTY_PAGES : 0;
        foreach (var region in Memory.Regions)
            Kvm.SetUserMemoryRegion(region, flags);
        DirtyLogging = enabled;
    }

    /// <summary>
    /// KVM_GET_DIRTY_LOG for <paramref name="region"/>: ORs into <paramref name="into"/> the pages the guest
    /// wrote since the last call (bit i = page i of the region) and clears KVM's log. Needs <see cref="DirtyLogging"/>.
    /// </summary>
    public void TakeDirtyLog(GuestRegion region, Span<ulong> into)
    {
        int words = (int)((region.Size / MemoryLayout.PageSize + 63) / 64);
        var log = new ulong[words];
        Kvm.GetDirtyLog((uint)region.Slot, log);
        for (int i = 0; i < words; i++) into[i] |= log[i];
    }

    /// <summary>Validates options, opens KVM and creates the VM, memory, irqchip and vCPUs (not yet running).</summary>
    public static VirtualMachine Create(MachineOptions options) => CreateCore(options, null, null);

    /// <summary>
    /// For snapshot restore: a VM over existing guest memory (typically <see cref="GuestMemory.CreateFromFile"/>),
    /// whose vCPUs get the given CPUID tables and no boot-time MSR/LAPIC defaults (the caller sets the
    /// saved state before <see cref="Start"/>). Takes ownership of <paramref name="memory"/>, also on failure.
    /// </summary>
    public static VirtualMachine CreateRestored(MachineOptions options, GuestMemory memory, IReadOnlyList<kvm_cpuid_entry2[]> cpuid)
    {
        try
        {
            if (memory.TotalSize != options.MemoryBytes)
                throw new MachineConfigException(MachineConfigError.MemoryMismatch, $"guest memory is {memory.TotalSize} bytes but the machine has {options.MemoryBytes}");
            if (cpuid.Count != options.VcpuCount)
                throw new MachineConfigException(MachineConfigError.CpuidMismatch, $"{cpuid.Count} CPUID tables for {options.VcpuCount} vCPUs");
        }
        catch
        {
            memory.Dispose();
            throw;
        }
        return CreateCore(options, memory, cpuid);
    }

    private static VirtualMachine CreateCore(MachineOptions options, GuestMemory? restoredMemory, IReadOnlyList<kvm_cpuid_entry2[]>? cpuid)
    {
        try
        {
            return CreateChecked(options, ref restoredMemory, cpuid);
        }
        finally
        {
            restoredMemory?.Dispose(); // still ours only when creation failed
        }
    }

    private static VirtualMachine CreateChecked(MachineOptions options, ref GuestMemory? restoredMemory, IReadOnlyList<kvm_cpuid_entry2[]>? cpuid)
    {
        if (options.MemoryBytes < MachineOptions.MinMemoryBytes || options.MemoryBytes > MachineOptions.MaxMemoryBytes)
            throw new MachineConfigException(MachineConfigError.MemorySizeOutOfRange, $"memory size {options.MemoryBytes / MemoryLayout.MiB} MiB is outside {MachineOptions.MinMemoryBytes / MemoryLayout.MiB} MiB..{MachineOptions.MaxMemoryBytes / MemoryLayout.GiB} GiB");
        if (options.MemoryBytes % MemoryLayout.PageSize != 0)
            throw new MachineConfigException(MachineConfigError.MemoryNotPageAligned, "memory size must be a multiple of 4 KiB");
        if (options.VcpuCount < 1)
            throw new MachineConfigException(MachineConfigError.VcpuCountOutOfRange, $"vCPU count {options.VcpuCount} must be at least 1");

        var kvm = KvmSystem.Open();
        KvmVm? vm = null;
        GuestMemory? memory = null;
        VirtualMachine? machine = null;
        try
        {
            int max = kvm.MaxVcpus;
            if (options.VcpuCount > max)
                throw new MachineConfigException(MachineConfigError.VcpusExceedHost, $"{options.VcpuCount} vCPUs requested but this host's KVM allows at most {max}");
            if (options.VcpuCount > 254)
                throw new MachineConfigException(MachineConfigError.VcpuCountOutOfRange, "at most 254 vCPUs (xAPIC ids)");
            ulong hostMemory = HostMemoryBytes();
            if (hostMemory > 0 && options.MemoryBytes > hostMemory)
                throw new MachineConfigException(MachineConfigError.MemoryExceedsHost, $"{options.MemoryBytes / MemoryLayout.MiB} MiB requested but the host has {hostMemory / MemoryLayout.MiB} MiB");

            bool pvm = options.Pvm ?? KvmSystem.IsPvmHost;
            vm = kvm.CreateVm();
            memory = restoredMemory ?? GuestMemory.CreateAnonymous(options.MemoryBytes);
            restoredMemory = null;
            machine = new VirtualMachine(options, kvm, vm, memory, pvm);
            machine.Initialize(cpuid);
            return machine;
        }
        catch
        {
            if (machine is not null) machine.Dispose();
            else
            {
                memory?.Dispose();
                vm?.Dispose();
                kvm.Dispose();
            }
            throw;
        }
    }

    private void Initialize(IReadOnlyList<kvm_cpuid_entry2[]>? restoredCpuid)
    {
        foreach (var region in Memory.Regions)
            Kvm.SetUserMemoryRegion(region);
        Kvm.SetTssAddress(TssAddress);
        Kvm.SetIdentityMapAddress(IdentityMapAddress);
        if (Options.InKernelIrqchip)
        {
            Kvm.CreateIrqchip();
            Kvm.CreatePit2();
        }
        if (IsPvm)
            VmLog.PvmHost(Logger);

        if (restoredCpuid is not null)
        {
            for (int i = 0; i < _runners.Length; i++)
            {
                var vcpu = Kvm.CreateVcpu(i);
                _runners[i] = new VcpuRunner(this, vcpu);
                _cpuid[i] = restoredCpuid[i];
                vcpu.SetCpuid(restoredCpuid[i]);
            }
            return;
        }

        var supported = _kvm.GetSupportedCpuid();
        var masked = IsPvm ? PvmQuirks.MaskedFeatures : [];
        foreach (var f in masked)
            VmLog.PvmHiddenFeature(Logger, f.Name);

        for (int i = 0; i < _runners.Length; i++)
        {
            var vcpu = Kvm.CreateVcpu(i);
            _runners[i] = new VcpuRunner(this, vcpu);
            _cpuid[i] = Cpuid.ForVcpu(supported, i, _runners.Length, masked);
            vcpu.SetCpuid(_cpuid[i]);
            foreach (var refused in CpuSetup.SetupMsrs(vcpu))
                VmLog.MsrRefused(Logger, i, refused);
            if (Options.InKernelIrqchip) CpuSetup.SetupLapic(vcpu);
        }
    }

    /// <summary>An interrupt line to a GSI of the in-kernel irqchip.</summary>
    public IInterruptLine InterruptLine(uint gsi) =>
        Options.InKernelIrqchip ? new KvmInterruptLine(Kvm, gsi) : NullInterruptLine.Instance;

    /// <summary>Starts one thread per vCPU.</summary>
    public void Start() => Start(paused: false);

    /// <summary>
    /// Starts one thread per vCPU; with <paramref name="paused"/> the threads park before their first
    /// KVM_RUN and the VM is <see cref="VmState.Paused"/> until <see cref="Resume"/> (a restored VM that
    /// is not to resume yet).
    /// </summary>
    public void Start(bool paused)
    {
        lock (_stateLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_state != VmState.Created) throw new InvalidOperationException($"cannot start a VM in state {_state}");
            _runningThreads = _runners.Length;
            if (paused)
            {
                _resumeEvent.Reset();
                _pauseRequested = true;
                _state = VmState.Paused;
            }
            else _state = VmState.Running;
        }
        foreach (var r in _runners) r.Start();
    }

    internal void OnFirstGuestEntry(long timestamp) => Interlocked.CompareExchange(ref _firstEntryTimestamp, timestamp, 0);

    /// <summary>Stops every vCPU outside KVM_RUN and waits until all are parked. Returns false on timeout.</summary>
    public bool Pause(TimeSpan timeout)
    {
        lock (_stateLock)
        {
            if (_state == VmState.Paused) return true;
            if (_state != VmState.Running) throw new InvalidOperationException($"cannot pause a VM in state {_state}");
            _resumeEvent.Reset();
            _pauseRequested = true;
        }
        KickAll();
        var deadline = DateTime.UtcNow + timeout;
        lock (_stateLock)
        {
            while (Volatile.Read(ref _pausedCount) < Volatile.Read(ref _runningThreads) && !_stopRequested)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(_stateLock, left);
            }
            if (_stopRequested) return false;
            _state = VmState.Paused;
            return true;
        }
    }

    public void Resume()
    {
        lock (_stateLock)
        {
            if (_state == VmState.Running) return;
            if (_state != VmState.Paused) throw new InvalidOperationException($"cannot resume a VM in state {_state}");
            _pauseRequested = false;
            _state = VmState.Running;
            _resumeEvent.Set();
        }
    }

    /// <summary>Ends the VM (if still running) with <see cref="VmExitKind.Stopped"/> and waits for every vCPU thread.</summary>
    public VmExit Stop(TimeSpan? timeout = null)
    {
        RequestExit(new VmExit(VmExitKind.Stopped, "stopped by the host"));
        if (State == VmState.Created) return _exit!;
        if (!_exited.Task.Wait(timeout ?? Options.StopTimeout))
            throw new TimeoutException("vCPU threads did not stop in time");
        return _exited.Task.Result;
    }

    /// <summary>Records why the VM ends (the first reason wins) and kicks every vCPU out of the guest.</summary>
    public void RequestExit(VmExit exit)
    {
        if (Interlocked.CompareExchange(ref _exit, exit, null) is null && exit.Kind != VmExitKind.Stopped)
            VmLog.Exit(Logger, exit);
        _stopRequested = true;
        _resumeEvent.Set();
        lock (_stateLock)
        {
            Monitor.PulseAll(_stateLock);
            if (_state == VmState.Created)
            {
                _state = VmState.Exited;
                _exited.TrySetResult(_exit!);
            }
        }
        KickAll();
    }

    private void KickAll()
    {
        lock (_kickLock)
        {
            if (_vcpusDisposed) return;
            foreach (var r in _runners) r?.Kick();
        }
    }

    internal void OnVcpuPaused()
    {
        lock (_stateLock)
        {
            _pausedCount++;
            Monitor.PulseAll(_stateLock);
        }
        _resumeEvent.Wait();
        lock (_stateLock) _pausedCount--;
    }

    internal void OnVcpuThreadExit()
    {
        if (Interlocked.Decrement(ref _runningThreads) != 0) return;
        lock (_stateLock)
        {
            _state = VmState.Exited;
            Monitor.PulseAll(_stateLock);
        }
        _exited.TrySetResult(_exit ?? new VmExit(VmExitKind.VmmError, "all vCPUs ended without a reason"));
    }

    private static ulong HostMemoryBytes() => FireSharp.Kvm.Interop.ProcInfo.HostMemoryBytes();

    /// <summary>
    /// Stops the vCPUs and releases the VM. A vCPU thread still running after <see cref="MachineOptions.StopTimeout"/>
    /// (stuck in a device, say) would fault on its unmapped kvm_run page or guest memory when it carries on, so then
    /// the vCPUs, the VM and its memory are released only once every vCPU thread has ended: never, if one never does.
    /// </summary>
    public void Dispose()
    {
        lock (_stateLock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        if (State is VmState.Running or VmState.Paused)
        {
            try { Stop(); }
            catch (TimeoutException e)
            {
                VmLog.DisposeTimedOut(Logger, e.Message);
                _exited.Task.ContinueWith(_ => Release(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                return;
            }
        }
        Release();
    }

    /// <summary>Unmaps and closes everything; only when no vCPU thread runs.</summary>
    private void Release()
    {
        lock (_kickLock) _vcpusDisposed = true;
        foreach (var r in _runners) r?.Vcpu.Dispose();
        Kvm.Dispose();
        Memory.Dispose();
        _kvm.Dispose();
        _resumeEvent.Dispose();
    }
}
