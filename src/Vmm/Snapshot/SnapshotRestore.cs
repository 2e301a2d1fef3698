using System.Diagnostics;
using FireSharp.Devices.Virtio;
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
/// are rebuilt, device, VM and vCPU state are set, and the vCPUs start (or stay paused).
/// </summary>
public static class SnapshotRestore
{
    public const string DriveKind = "virtio-blk", NetKind = "virtio-net", VsockKind = "virtio-vsock";

    public static MicroVm Restore(string directory, RestoreOverrides overrides) => Restore(directory, overrides, out _);

    public static MicroVm Restore(string directory, RestoreOverrides overrides, out RestoreTimings timings)
    {
        ArgumentNullException.ThrowIfNull(overrides);
        long start = Stopwatch.GetTimestamp();
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
            memory = GuestMemory.CreateFromFile(chain?.Root.MemoryPath ?? snapshot.MemoryPath, state.Config.MemoryBytes);
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
        catch (VirtioConfigException e)
        {
            // SpecFor checked the images; this is one that changed since, or cannot be opened.
            throw new SnapshotException(e.Reason == VirtioConfigError.ImageNotFound ? SnapshotErrorReason.NotFound : SnapshotErrorReason.IoError,
                $"{snapshot.Directory}: cannot open the drives: {e.Message}", e);
        }
        catch (Devices.Virtio.Net.NetConfigException e)
        {
            // The tap this clone is to use cannot be opened (busy, missing permission, no /dev/net/tun).
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"{snapshot.Directory}: cannot open the network interfaces' taps: {e.Message}", e);
        }
        long created = Stopwatch.GetTimestamp();
        try
        {
            CheckVsockSlot(snapshot, vm);
            NetSettings.CheckSlots(snapshot, vm.Nics);
            var built = vm.StatefulDevices.Select(d => (d.Descriptor.Id, d.Descriptor.Kind)).ToList();
            var saved = state.Config.Devices.Select(d => (d.Id, d.Kind)).ToList();
            if (!built.ToHashSet().SetEquals(saved))
                throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                    $"restore built devices [{string.Join(", ", built)}] but the snapshot has [{string.Join(", ", saved)}]");
            foreach (var (descriptor, device) in vm.StatefulDevices)
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
            // The irqchip is in place now: an interrupt raised earlier would have been overwritten by it.
            vm.Virtio.RaisePendingInterrupts();
            vm.Vsock?.Transport?.RaisePendingInterrupt();
            foreach (var nic in vm.Nics) nic.Transport?.RaisePendingInterrupt();
            // A VM left paused keeps its devices quiesced too, as MicroVm.Pause does; MicroVm.Resume lets them run.
            // The vsock's restored state queued a transport reset event: the guest gets it once the device runs.
            if (overrides.Resume)
            {
                vm.Virtio.Unquiesce();
                vm.Vsock?.Transport?.Unquiesce();
                vm.UnquiesceNics();
            }
            long set = Stopwatch.GetTimestamp();
            vm.Machine.Start(paused: !overrides.Resume);
            long end = Stopwatch.GetTimestamp();
            timings = new RestoreTimings(
                Stopwatch.GetElapsedTime(start, loaded), Stopwatch.GetElapsedTime(loaded, created),
                Stopwatch.GetElapsedTime(created, set), Stopwatch.GetElapsedTime(set, end), Stopwatch.GetElapsedTime(start, end));
            overrides.Logger.LogInformation(
                "restored {Dir} ({Mem} MiB, {Vcpus} vCPU) in {Total:F2} ms: state read {Read:F2} ms, VM created {Create:F2} ms, state set {Set:F2} ms, vCPU threads {Threads:F2} ms; {Run}",
                snapshot.Directory, state.Config.MemoryBytes / MemoryLayout.MiB, state.Config.VcpuCount, timings.Total.TotalMilliseconds,
                timings.ReadState.TotalMilliseconds, timings.CreateVm.TotalMilliseconds, timings.SetState.TotalMilliseconds,
                timings.StartVcpus.TotalMilliseconds, overrides.Resume ? "resumed" : "left paused");
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
            int savedDrives = saved.Count(d => d.Kind == DriveKind), expectedDrives = expected.Count(d => d.Kind == DriveKind);
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory} was taken with devices [{string.Join(", ", saved)}], not the requested [{string.Join(", ", expected)}]"
                + (savedDrives != expectedDrives ? $" ({savedDrives} drive(s), not {expectedDrives})" : ""));
        }

        CheckOverrideTargets(snapshot, overrides.DrivePaths.Keys, DriveKind, "drive");
        CheckOverrideTargets(snapshot, overrides.TapNames.Keys, NetKind, "network interface");
        if (overrides.VsockUdsPath is not null && !saved.Any(d => d.Kind == VsockKind))
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"a vsock path override was given but {snapshot.Directory} has no vsock device");

        var spec = new VmSpec
        {
            KernelPath = config.KernelPath,
            MemoryMib = config.MemoryBytes / MemoryLayout.MiB,
            Vcpus = config.VcpuCount,
            Serial = overrides.Serial,
            Pvm = overrides.Pvm,
            Logger = overrides.Logger,
            Drives = DrivesFor(snapshot, overrides),
            Vsock = VsockFor(snapshot, overrides),
            NetworkInterfaces = NetSettings.InterfacesFor(snapshot, overrides),
        };
        // Other devices with host-side settings (tap, vsock) go into the spec here, from the descriptors'
        // settings with the overrides applied, once MicroVm builds them.
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

    /// <summary>
    /// The snapshot's drives in slot order, each at its recorded path or at the override's. Each image must
    /// exist and have the recorded size (a clone's copy of a disk must be a copy of the same disk); the
    /// resulting list must be valid (<see cref="DriveSpec.Validate"/>: no image backs two drives).
    /// </summary>
    private static List<DriveSpec> DrivesFor(LoadedSnapshot snapshot, RestoreOverrides overrides)
    {
        var drives = new List<DriveSpec>();
        foreach (var descriptor in snapshot.State.Config.Devices.Where(d => d.Kind == DriveKind))
        {
            DriveSpec saved;
            int slot;
            ulong size;
            try
            {
                (saved, slot, size) = DriveSettings.Parse(descriptor);
            }
            catch (InvalidDataException e)
            {
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: {e.Message}", e);
            }
            if (slot != drives.Count)
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: drive '{descriptor.Id}' is in slot {slot}, expected {drives.Count}");
            bool overridden = overrides.DrivePaths.TryGetValue(descriptor.Id, out var newPath);
            var drive = overridden ? saved with { Path = newPath! } : saved;
            string origin = overridden ? $"the override's image {drive.Path}" : $"its image {drive.Path}";
            // A drive path may be a symlink (build/guest/rootfs.ext4 is one): its target's size is the drive's.
            var info = new FileInfo(drive.Path);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
            if (!info.Exists)
                throw new SnapshotException(overridden ? SnapshotErrorReason.DeviceSetMismatch : SnapshotErrorReason.NotFound,
                    $"drive '{descriptor.Id}' of {snapshot.Directory}: {origin} does not exist");
            if ((ulong)info.Length != size)
                throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                    $"drive '{descriptor.Id}' of {snapshot.Directory} was {size} bytes, but {origin} is {info.Length} bytes: a restored drive must have the snapshot's size");
            drives.Add(drive);
        }
        try
        {
            DriveSpec.Validate(drives);
        }
        catch (VirtioConfigException e)
        {
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"{snapshot.Directory}: the restored drives are not a valid set: {e.Message}", e);
        }
        return drives;
    }

    /// <summary>
    /// The snapshot's vsock device (if any) with this clone's socket path: the override's, else the recorded one.
    /// The recorded path must then be free: a restore never takes over a socket path that exists (the
    /// snapshotted VM, or another clone, may still be listening there), so clones need an override each.
    /// </summary>
    private static Devices.Virtio.Vsock.VsockDeviceSpec? VsockFor(LoadedSnapshot snapshot, RestoreOverrides overrides)
    {
        var descriptors = snapshot.State.Config.Devices.Where(d => d.Kind == VsockKind).ToList();
        if (descriptors.Count == 0) return null;
        if (descriptors.Count > 1)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: {descriptors.Count} vsock devices; a VM has at most one");
        Devices.Virtio.Vsock.VsockDeviceSpec saved;
        try
        {
            (saved, _) = VsockSettings.Parse(descriptors[0]);
        }
        catch (InvalidDataException e)
        {
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: {e.Message}", e);
        }
        var spec = overrides.VsockUdsPath is { } path ? saved with { UdsPath = path } : saved;
        try
        {
            spec.Validate();
        }
        catch (VirtioConfigException e) when (overrides.VsockUdsPath is null && e.Reason == VirtioConfigError.InvalidVsockPath)
        {
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory}: the vsock socket path it was taken with cannot be used ({e.Message}); give this clone its own path (RestoreOverrides.VsockUdsPath, --vsock-path)", e);
        }
        catch (VirtioConfigException e)
        {
            throw new SnapshotException(overrides.VsockUdsPath is null ? SnapshotErrorReason.Corrupt : SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory}: vsock device: {e.Message}", e);
        }
        return spec;
    }

    /// <summary>The guest's driver knows the vsock at its old virtio-mmio address: the rebuilt one must sit in the same slot.</summary>
    private static void CheckVsockSlot(LoadedSnapshot snapshot, MicroVm vm)
    {
        var descriptor = snapshot.State.Config.Devices.FirstOrDefault(d => d.Kind == VsockKind);
        if (descriptor is null || vm.Vsock is null) return;
        int saved = VsockSettings.Parse(descriptor).Slot;
        if (saved != vm.Vsock.Slot)
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                $"{snapshot.Directory}: the vsock device was in virtio-mmio slot {saved}; this FireSharp places it in slot {vm.Vsock.Slot}");
    }

    private static void CheckOverrideTargets(LoadedSnapshot snapshot, IEnumerable<string> ids, string kind, string what)
    {
        foreach (var id in ids)
        {
            if (!snapshot.State.Config.Devices.Any(d => d.Id == id && d.Kind == kind))
                throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"override for {what} '{id}', but {snapshot.Directory} has no {kind} device with that id");
        }
    }

    private static bool SameIdsAndKinds(IEnumerable<DeviceDescriptor> a, IEnumerable<DeviceDescriptor> b) =>
        a.Select(d => (d.Id, d.Kind)).ToHashSet().SetEquals(b.Select(d => (d.Id, d.Kind)));
}
