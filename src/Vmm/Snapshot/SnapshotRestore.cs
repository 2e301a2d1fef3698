using System.Diagnostics;
using FireSharp.Devices;
using FireSharp.Devices.Manager;
using FireSharp.Kvm;
using FireSharp.Memory;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Snapshot;

/// <summary>Where a restore spent its time (for logs and the P4 benchmark).</summary>
public sealed record RestoreTimings(TimeSpan ReadState, TimeSpan CreateVm, TimeSpan SetState, TimeSpan StartVcpus, TimeSpan Total);

/// <summary>
/// Restores a snapshot into a new VM in this process. Everything that can be checked without KVM is
/// checked first (state file header, length, CRC and content; memory file size; device set and
/// overrides), so a bad snapshot creates no VM. Then: guest memory is the snapshot's memory file
/// mapped MAP_PRIVATE (nothing is copied; pages load on first touch; writes stay private to this VM,
/// so any number of clones can restore from one snapshot at once), the machine and the same device set
/// are rebuilt, device, VM and vCPU state are set, and the vCPUs start (or stay paused). The devices are the
/// device manager's business: each descriptor is rebuilt by its own kind (<see cref="DeviceRestore"/>).
/// </summary>
public static class SnapshotRestore
{
    public static MicroVm Restore(string directory, RestoreOverrides overrides) => Restore(directory, overrides, out _);

    /// <remarks>
    /// With <see cref="RestoreOverrides.Keys"/> the snapshot chain is opened and verified first
    /// (<see cref="SnapshotFiles.VerifiedScope"/>) and the restore reads only those handles; without, it reads what
    /// this process was handed already verified (a jailed worker) or, else, the files as they are.
    /// </remarks>
    public static MicroVm Restore(string directory, RestoreOverrides overrides, out RestoreTimings timings)
    {
        ArgumentNullException.ThrowIfNull(overrides);
        long start = Stopwatch.GetTimestamp();
        using var verified = overrides.Keys is { } keys ? SnapshotFiles.VerifiedScope(directory, keys) : null;
        return RestoreOpened(directory, overrides, start, out timings);
    }

    private static MicroVm RestoreOpened(string directory, RestoreOverrides overrides, long start, out RestoreTimings timings)
    {
        var snapshot = SnapshotReader.Load(directory);
        var state = snapshot.State;
        // A diff snapshot: check every base of its chain before anything is created.
        var diff = DiffInfo.TryLoad(snapshot.Directory);
        (LoadedSnapshot Root, List<(string Dir, DiffInfo Diff)> Diffs)? chain = diff is null ? null : DiffRestore.ResolveChain(snapshot, diff);
        var spec = SpecFor(snapshot, overrides);
        long loaded = Stopwatch.GetTimestamp();

        GuestMemory memory;
        try
        {
            // A diff maps its root full snapshot's memory (MAP_PRIVATE as always) and copies its pages over it.
            string memoryPath = chain?.Root.MemoryPath ?? snapshot.MemoryPath;
            memory = GuestMemory.CreateFromFile(SnapshotFiles.Open(memoryPath), memoryPath, state.Config.MemoryBytes);
            if (chain is { } c)
            {
                try
                {
                    DiffRestore.Apply(memory, c.Diffs);
                }
                catch
                {
                    memory.Dispose();
                    throw;
                }
            }
        }
        catch (InvalidDataException e)
        {
            throw new SnapshotException(SnapshotErrorReason.MemoryFileSizeMismatch, e.Message, e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot map {snapshot.MemoryPath}: {e.Message}", e);
        }

        MicroVm vm;
        try
        {
            vm = MicroVm.CreateRestored(spec, memory, [.. state.Vcpus.Select(v => v.Cpuid)], start);
        }
        catch (DeviceConfigException e)
        {
            // SpecFor checked what it could; this is a host resource that changed since, or cannot be opened
            // (an image, a busy tap, no /dev/net/tun).
            var reason = e.Problem switch
            {
                DeviceConfigProblem.NotFound => SnapshotErrorReason.NotFound,
                DeviceConfigProblem.HostIo => SnapshotErrorReason.IoError,
                _ => SnapshotErrorReason.DeviceSetMismatch,
            };
            throw new SnapshotException(reason, $"{snapshot.Directory}: cannot open the devices: {e.Message}", e);
        }
        catch (KvmException e) when (!e.Operation.StartsWith("open ", StringComparison.Ordinal))
        {
            // The saved CPUID (or other per-vCPU set-up from the state file) that KVM refuses: a typed rejection, not a
            // host failure (found by SnapshotMutationTests: a mutated CPUID leaf made KVM_SET_CPUID2 fail with EINVAL).
            throw new SnapshotException(SnapshotErrorReason.KvmStateRejected, $"{snapshot.Directory}: KVM refused the saved vCPU set-up: {e.Message}", e);
        }
        long created = Stopwatch.GetTimestamp();
        try
        {
            var stateful = vm.Devices.Stateful;
            var built = stateful.Select(d => (d.Descriptor.Id, d.Descriptor.Kind)).ToList();
            var saved = state.Config.Devices.Select(d => (d.Id, d.Kind)).ToList();
            if (!built.ToHashSet().SetEquals(saved))
                throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                    $"restore built devices [{string.Join(", ", built)}] but the snapshot has [{string.Join(", ", saved)}]");
            foreach (var (descriptor, device) in stateful)
            {
                try
                {
                    device.RestoreState(state.DeviceStates[descriptor.Id]);
                }
                catch (InvalidDataException e)
                {
                    throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: state of device {descriptor}: {e.Message}", e);
                }
            }
            try
            {
                KvmStateIo.ApplyVm(vm.Machine, state.Vm);
                foreach (var vcpu in state.Vcpus) KvmStateIo.ApplyVcpu(vm.Machine, vcpu);
            }
            catch (KvmException e)
            {
                throw new SnapshotException(SnapshotErrorReason.KvmStateRejected, $"{snapshot.Directory}: KVM refused the saved state: {e.Message}", e);
            }
            // The irqchip is in place now: the devices re-raise what it would have overwritten, then run
            // (a VM left paused keeps them quiesced too, as MicroVm.Pause does; MicroVm.Resume lets them run).
            vm.Devices.CompleteRestore(overrides.Resume);
            overrides.BeforeVcpusStart?.Invoke();
            long set = Stopwatch.GetTimestamp();
            vm.Machine.Start(paused: !overrides.Resume);
            long end = Stopwatch.GetTimestamp();
            timings = new RestoreTimings(
                Stopwatch.GetElapsedTime(start, loaded), Stopwatch.GetElapsedTime(loaded, created),
                Stopwatch.GetElapsedTime(created, set), Stopwatch.GetElapsedTime(set, end), Stopwatch.GetElapsedTime(start, end));
            if (overrides.Logger.IsEnabled(LogLevel.Information))
                SnapshotLog.Restored(overrides.Logger, snapshot.Directory, state.Config.MemoryBytes / MemoryLayout.MiB, state.Config.VcpuCount,
                    timings.Total.TotalMilliseconds, timings.ReadState.TotalMilliseconds, timings.CreateVm.TotalMilliseconds,
                    timings.SetState.TotalMilliseconds, timings.StartVcpus.TotalMilliseconds, overrides.Resume ? "resumed" : "left paused");
            return vm;
        }
        catch
        {
            vm.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The spec a restore builds, from the snapshot's machine config and the overrides; refuses a device
    /// set that differs from the requested one or that this build cannot create, and overrides that name
    /// devices the snapshot does not have.
    /// </summary>
    public static VmSpec SpecFor(LoadedSnapshot snapshot, RestoreOverrides overrides)
    {
        var config = snapshot.State.Config;
        if (config.MemoryBytes % MemoryLayout.MiB != 0)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: guest memory {config.MemoryBytes} bytes is not whole MiB");
        if (!config.InKernelIrqchip)
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"{snapshot.Directory} was taken without the in-kernel irqchip, which a microVM always has");
        var saved = config.Devices;
        if (overrides.ExpectedDevices is { } expected && !SameIdsAndKinds(expected, saved))
        {
            var counts = DeviceKinds.Virtio
                .Select(k => (k.Noun, Saved: saved.Count(d => d.Kind == k.Kind), Expected: expected.Count(d => d.Kind == k.Kind)))
                .Where(c => c.Saved != c.Expected)
                .Select(c => $"{c.Saved} {c.Noun}(s), not {c.Expected}")
                .ToList();
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory} was taken with devices [{string.Join(", ", saved)}], not the requested [{string.Join(", ", expected)}]"
                + (counts.Count > 0 ? $" ({string.Join(", ", counts)})" : ""));
        }

        IReadOnlyList<IDeviceConfig> devices;
        try
        {
            devices = DeviceRestore.ConfigsFor(saved, overrides.DeviceOverrides);
        }
        catch (DeviceRestoreException e)
        {
            var reason = e.Problem switch
            {
                DeviceRestoreProblem.Corrupt => SnapshotErrorReason.Corrupt,
                DeviceRestoreProblem.NotFound => SnapshotErrorReason.NotFound,
                _ => SnapshotErrorReason.DeviceSetMismatch,
            };
            throw new SnapshotException(reason, $"{snapshot.Directory}: {e.Message}", e);
        }

        var spec = new VmSpec
        {
            KernelPath = config.KernelPath,
            MemoryMib = config.MemoryBytes / MemoryLayout.MiB,
            Vcpus = config.VcpuCount,
            Serial = overrides.Serial,
            Pvm = overrides.Pvm,
            Logger = overrides.Logger,
            Devices = devices,
        };
        // The same set as recorded: a kind this build does not have, or a standard device missing, is refused here.
        var planned = MicroVm.PlannedDevices(spec);
        if (!SameIdsAndKinds(planned, saved))
        {
            var missing = saved.Where(d => !planned.Any(p => p.Id == d.Id && p.Kind == d.Kind)).ToList();
            var extra = planned.Where(p => !saved.Any(d => p.Id == d.Id && p.Kind == d.Kind)).ToList();
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory} has devices [{string.Join(", ", saved)}]; this FireSharp would build [{string.Join(", ", planned)}]"
                + (missing.Count > 0 ? $"; cannot create [{string.Join(", ", missing)}]" : "")
                + (extra.Count > 0 ? $"; snapshot lacks [{string.Join(", ", extra)}]" : ""));
        }
        return spec;
    }

    private static bool SameIdsAndKinds(IEnumerable<DeviceDescriptor> a, IEnumerable<DeviceDescriptor> b) =>
        a.Select(d => (d.Id, d.Kind)).ToHashSet().SetEquals(b.Select(d => (d.Id, d.Kind)));
}
