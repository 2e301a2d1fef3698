using System.Diagnostics;
using FireSharp.Devices;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Snapshot;

/// <summary>What <see cref="SnapshotWriter.Create"/> wrote.</summary>
public sealed record SnapshotResult
{
    public required string Directory { get; init; }
    public required ulong MemoryBytes { get; init; }

    /// <summary>Bytes of guest memory actually written (non-zero pages); the rest of the file is holes.</summary>
    public required ulong MemoryBytesWritten { get; init; }

    public required long StateFileBytes { get; init; }

    /// <summary>How long the vCPUs were paused for the snapshot (zero if the VM was paused already and stays so).</summary>
    public required TimeSpan PausedFor { get; init; }

    public required TimeSpan Elapsed { get; init; }

    /// <summary>For a diff snapshot, the base it applies to (the VM's previous snapshot); null for a full one.</summary>
    public string? BaseDirectory { get; init; }

    /// <summary>For a diff snapshot, how many 4 KiB pages it holds (dirtied since its base); null for a full one.</summary>
    public int? DiffPages { get; init; }
}

/// <summary>
/// Takes a full snapshot of a <see cref="MicroVm"/> into a new directory:
/// <list type="bullet">
/// <item><c>vmstate</c>: the machine config, VM, vCPU and device state (<see cref="SnapshotFormat"/>);</item>
/// <item><c>memory</c>: guest RAM, the regions in order, sparse (only non-zero 4 KiB pages are written).</item>
/// </list>
/// Everything is written into a hidden temporary directory beside the target, fsynced, then renamed to
/// the target in one step (renameat2 RENAME_NOREPLACE) and the parent directory fsynced: a snapshot
/// directory either exists complete or not at all. On any failure (a full disk included) the temporary
/// directory is removed and the VM is put back in the state it was in. Disks are the user's: they are
/// not copied.
/// </summary>
public static class SnapshotWriter
{
    public const string StateFileName = "vmstate", MemoryFileName = "memory";

    private const int ChunkBytes = 1 << 20;
    private const int Page = (int)MemoryLayout.PageSize;

    /// <summary>
    /// Snapshots <paramref name="vm"/>, which must be running (it is paused for the snapshot) or paused.
    /// With <paramref name="resume"/> the VM runs afterwards; without, it stays paused. Throws
    /// <see cref="SnapshotException"/> (DirectoryExists, NotFound, InvalidVmState, DiskFull, IoError, KvmStateRejected).
    /// </summary>
    /// <remarks>
    /// Diff snapshots: a full snapshot with <paramref name="trackDirty"/> turns on dirty-page tracking for
    /// the VM (KVM's dirty log for the guest's writes, <see cref="GuestMemory.StartDirtyTracking"/> for the
    /// host's). Then <paramref name="diff"/> writes only the pages dirtied since the VM's previous snapshot
    /// (full or diff) and a <c>diff</c> file naming that snapshot as its base; a diff without tracking on
    /// throws InvalidVmState. While tracking is on, every snapshot restarts it (a full one becomes the new base).
    /// </remarks>
    /// <param name="recordAs">Where the snapshot will be moved to by its caller (a jailed worker writes into an outbox):
    /// the path a later diff names as its base. Null: <paramref name="directory"/>.</param>
    /// <param name="signingKey">Signs the snapshot (<see cref="SnapshotMac"/>, <c>vmstate.mac</c>) before it is renamed
    /// into place: for <c>firesharp run --snapshot-dir --snapshot-key</c>, which signs its own snapshots. The daemon never
    /// gives its worker a key: it signs after the snapshot is in its final directory (<see cref="SnapshotMac.Sign"/>).</param>
    public static SnapshotResult Create(MicroVm vm, string directory, bool resume, TimeSpan? pauseTimeout = null, bool diff = false, bool trackDirty = false,
        string? recordAs = null, SnapshotKey? signingKey = null)
    {
        ArgumentNullException.ThrowIfNull(vm);
        // One snapshot at a time per VM: a second one would resume the VM under the first.
        lock (vm.CaptureLock) return CreateLocked(vm, directory, resume, pauseTimeout, diff, trackDirty, recordAs, signingKey);
    }

    private static SnapshotResult CreateLocked(MicroVm vm, string directory, bool resume, TimeSpan? pauseTimeout, bool diff, bool trackDirty, string? recordAs,
        SnapshotKey? signingKey)
    {
        long start = Stopwatch.GetTimestamp();
        string target = Path.GetFullPath(directory.TrimEnd('/') is { Length: > 0 } d ? d : directory);
        string parent = Path.GetDirectoryName(target) ?? "/";
        if (System.IO.Directory.Exists(target) || File.Exists(target))
            throw new SnapshotException(SnapshotErrorReason.DirectoryExists, $"snapshot directory {target} already exists");
        if (!System.IO.Directory.Exists(parent))
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"cannot create snapshot {target}: directory {parent} does not exist");

        var machine = vm.Machine;
        // Every device of the VM is the device manager's, and each is in its Stateful list: nothing the guest
        // sees is left out of the snapshot.
        var diffBase = vm.DiffBase;
        if (diff && (!machine.DirtyLogging || diffBase is null))
            throw new SnapshotException(SnapshotErrorReason.InvalidVmState,
                "cannot take a diff snapshot: dirty-page tracking is not on for this VM (take a full snapshot with trackDirty first)");
        bool track = diff || trackDirty || machine.DirtyLogging;
        var before = machine.State;
        if (before is not (VmState.Running or VmState.Paused))
            throw new SnapshotException(SnapshotErrorReason.InvalidVmState, $"cannot snapshot a VM that is {before.ToString().ToLowerInvariant()}: it must be running or paused");
        if (before == VmState.Running && !machine.Pause(pauseTimeout ?? TimeSpan.FromSeconds(5)))
        {
            if (machine.State == VmState.Paused) machine.Resume();
            throw new SnapshotException(SnapshotErrorReason.InvalidVmState, "cannot snapshot: the VM did not pause in time (or ended meanwhile)");
        }
        // With the vCPUs paused nothing new is submitted; the device threads finish the request in flight
        // (and its interrupt) and park, so memory, rings and device state stay still while they are saved.
        bool devicesWereQuiesced = vm.Devices.IsQuiesced;
        vm.Devices.Quiesce();
        long pausedAt = Stopwatch.GetTimestamp();
        string temp = Path.Combine(parent, $".{Path.GetFileName(target)}.partial-{Environment.ProcessId}-{Guid.NewGuid():N}");
        bool ok = false;
        DiffInfo? diffInfo = null;
        string? baseDir = diffBase?.Directory;
        ulong baseCrc = diffBase?.StateCrc ?? 0;
        try
        {
            var state = Capture(vm);
            if (track && !diff)
            {
                // A full snapshot is the new base: start counting dirty pages from here (the VM is paused).
                vm.DiffBase = null;
                RestartTracking(machine);
            }
            else if (diff)
            {
                // Reading KVM's log clears it: from here until success the pages live only in diffInfo
                // (the catch below hands them back to the host bitmap if the snapshot fails).
                diffInfo = new DiffInfo(machine.Memory.TotalSize, baseCrc, baseDir!, CollectDirtyPages(machine));
            }
            // 0700 before any file exists in it, whatever the umask: guest RAM and device state are the tenant's secrets.
            if (!FileSystem.TryCreateDirectory(temp, PrivateDirectoryMode))
                throw new IOException($"{temp} already exists");
            ulong written = diffInfo is null
                ? WriteMemory(machine.Memory, Path.Combine(temp, MemoryFileName))
                : WriteDiffMemory(machine.Memory, diffInfo.Pages, Path.Combine(temp, MemoryFileName));
            var bytes = SnapshotFormat.Encode(state);
            WriteFileDurably(Path.Combine(temp, StateFileName), bytes);
            byte[] diffBytes = diffInfo?.Encode() ?? [];
            if (diffInfo is not null) WriteFileDurably(Path.Combine(temp, DiffInfo.FileName), diffBytes);
            if (signingKey is not null)
                WriteFileDurably(Path.Combine(temp, SnapshotMac.FileName), SnapshotMac.Encode(temp, bytes, diffBytes, diffInfo is not null, signingKey));
            FileSystem.SyncDirectory(temp);
            if (!FileSystem.TryRenameNoReplace(temp, target))
                throw new SnapshotException(SnapshotErrorReason.DirectoryExists, $"snapshot directory {target} already exists");
            FileSystem.SyncDirectory(parent);
            ok = true;
            if (track) vm.DiffBase = (recordAs is { Length: > 0 } ? Path.GetFullPath(recordAs) : target, DiffInfo.StateCrc(bytes));
            var result = new SnapshotResult
            {
                Directory = target,
                MemoryBytes = machine.Memory.TotalSize,
                MemoryBytesWritten = written,
                StateFileBytes = bytes.Length,
                PausedFor = resume || before == VmState.Running ? Stopwatch.GetElapsedTime(pausedAt) : TimeSpan.Zero,
                Elapsed = Stopwatch.GetElapsedTime(start),
                BaseDirectory = diffInfo is null ? null : baseDir,
                DiffPages = diffInfo?.PageCount,
            };
            double pausedMs = Stopwatch.GetElapsedTime(pausedAt).TotalMilliseconds;
            SnapshotLog.Written(machine.Logger, target, written / 1024, result.MemoryBytes / MemoryLayout.MiB, bytes.Length, pausedMs);
            return result;
        }
        catch (IOException e) when (FileSystem.IsDiskFull(e))
        {
            throw new SnapshotException(SnapshotErrorReason.DiskFull, $"snapshot {target}: no space left on the file system ({e.Message}); nothing was kept", e);
        }
        catch (IOException e)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"snapshot {target}: {e.Message}; nothing was kept", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"snapshot {target}: {e.Message}; nothing was kept", e);
        }
        catch (Kvm.KvmException e)
        {
            throw new SnapshotException(SnapshotErrorReason.KvmStateRejected, $"snapshot {target}: reading VM state failed: {e.Message}", e);
        }
        finally
        {
            if (!ok && diffInfo is not null) GiveBack(machine.Memory, diffInfo.Pages);
            else if (!ok && diff) vm.DiffBase = null; // the dirty log may be half read: next must be full
            if (!ok) TryDelete(temp, machine.Logger);
            // A failed snapshot leaves the VM as it found it; a successful one resumes on request.
            bool resumeVm = machine.State == VmState.Paused && (ok ? resume : before == VmState.Running);
            if (resumeVm || !devicesWereQuiesced) vm.Devices.Unquiesce();
            if (resumeVm) machine.Resume();
        }
    }

    /// <summary>Turns on (or clears) KVM's dirty log and the host write bitmap: from now on, writes count toward the next diff.</summary>
    private static void RestartTracking(VirtualMachine machine)
    {
        if (!machine.DirtyLogging) machine.SetDirtyLogging(true); // a fresh log starts clear
        else
        {
            foreach (var region in machine.Memory.Regions)
                machine.TakeDirtyLog(region, new ulong[DiffInfo.Words(region.Size)]);
        }
        machine.Memory.StartDirtyTracking();
    }

    /// <summary>The pages written since the last snapshot (KVM's log ∪ host writes), as a memory-file page bitmap; clears both.</summary>
    private static ulong[] CollectDirtyPages(VirtualMachine machine)
    {
        var memory = machine.Memory;
        var pages = new ulong[DiffInfo.Words(memory.TotalSize)];
        ulong regionOffset = 0;
        foreach (var region in memory.Regions)
        {
            var map = new ulong[DiffInfo.Words(region.Size)];
            machine.TakeDirtyLog(region, map);
            if (!memory.TakeDirtyPages(region, map)) memory.StartDirtyTracking();
            ulong first = regionOffset / MemoryLayout.PageSize, count = region.Size / MemoryLayout.PageSize;
            for (ulong p = 0; p < count; p++)
            {
                if ((map[p / 64] & (1UL << (int)(p % 64))) != 0) pages[(first + p) / 64] |= 1UL << (int)((first + p) % 64);
            }
            regionOffset += region.Size;
        }
        return pages;
    }

    /// <summary>A failed diff: its pages go back into the host bitmap so the next diff still covers them.</summary>
    private static void GiveBack(GuestMemory memory, ulong[] pages)
    {
        ulong regionOffset = 0;
        foreach (var region in memory.Regions)
        {
            ulong first = regionOffset / MemoryLayout.PageSize;
            foreach (var (start, count) in DiffRestore.Runs(pages, first, region.Size / MemoryLayout.PageSize))
                memory.MarkDirty(region.GuestAddress + (start - first) * MemoryLayout.PageSize, count * MemoryLayout.PageSize);
            regionOffset += region.Size;
        }
    }

    /// <summary>Writes the pages of <paramref name="pages"/> (zero ones too) at their offsets into a full-size sparse file. Returns the bytes written.</summary>
    internal static ulong WriteDiffMemory(GuestMemory memory, ulong[] pages, string path)
    {
        ulong written = 0;
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        ulong regionOffset = 0;
        foreach (var region in memory.Regions)
        {
            ulong first = regionOffset / MemoryLayout.PageSize;
            foreach (var (start, count) in DiffRestore.Runs(pages, first, region.Size / MemoryLayout.PageSize))
            {
                for (ulong done = 0; done < count; done += ChunkBytes / Page)
                {
                    int n = (int)Math.Min((ulong)(ChunkBytes / Page), count - done);
                    ulong gpa = region.GuestAddress + (start - first + done) * MemoryLayout.PageSize;
                    RandomAccess.Write(file, memory.GetReadOnlySpan(gpa, n * Page), (long)((start + done) * MemoryLayout.PageSize));
                    written += (ulong)(n * Page);
                }
            }
            regionOffset += region.Size;
        }
        RandomAccess.SetLength(file, (long)memory.TotalSize);
        FileSystem.Sync(file, path);
        MakeReadOnly(path);
        return written;
    }

    /// <summary>Reads every piece of state of a paused (or not yet started) VM. No files are touched.</summary>
    public static SnapshotState Capture(MicroVm vm)
    {
        var machine = vm.Machine;
        var indices = machine.Kvm.System.GetMsrIndexList();
        var vcpus = new VcpuState[machine.Options.VcpuCount];
        for (int i = 0; i < vcpus.Length; i++) vcpus[i] = KvmStateIo.CaptureVcpu(machine, i, indices);
        if (machine.Logger.IsEnabled(LogLevel.Debug))
        {
            foreach (var v in vcpus)
            {
                string mp = v.MpState?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none";
                SnapshotLog.VcpuCaptured(machine.Logger, v.Id, v.Msrs.Length, indices.Length, v.Xsave.HasValue, v.Xcrs.HasValue,
                    v.DebugRegs.HasValue, v.Lapic.HasValue, mp);
            }
        }
        var devices = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var stateful = vm.Devices.Stateful;
        foreach (var (descriptor, device) in stateful) devices.Add(descriptor.Id, device.SaveState());
        return new SnapshotState
        {
            Config = new MachineConfig
            {
                MemoryBytes = machine.Memory.TotalSize,
                VcpuCount = machine.Options.VcpuCount,
                InKernelIrqchip = machine.Options.InKernelIrqchip,
                Pvm = machine.IsPvm,
                KernelPath = vm.KernelPath,
                Devices = [.. stateful.Select(d => d.Descriptor)],
            },
            Vm = KvmStateIo.CaptureVm(machine),
            Vcpus = vcpus,
            DeviceStates = devices,
            CreatedAt = DateTimeOffset.UtcNow,
        };
    }

    /// <summary>
    /// Writes guest RAM as one file (regions in order): only the 4 KiB pages that are not all zero, at
    /// their offsets, then the file is extended to the full size, so zero pages are holes. Pages the
    /// guest never touched are not even read (<see cref="GuestMemory.PossiblyNonZeroRuns"/>).
    /// Returns the bytes written.
    /// </summary>
    internal static ulong WriteMemory(GuestMemory memory, string path)
    {
        ulong written = 0;
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        ulong regionOffset = 0;
        foreach (var region in memory.Regions)
        {
            foreach (var (runGpa, runLength) in memory.PossiblyNonZeroRuns(region))
            {
                for (ulong done = 0; done < runLength; done += ChunkBytes)
                {
                    ulong gpa = runGpa + done;
                    int length = (int)Math.Min((ulong)ChunkBytes, runLength - done);
                    var chunk = memory.GetReadOnlySpan(gpa, length);
                    long fileOffset = (long)(regionOffset + (gpa - region.GuestAddress));
                    written += WriteNonZeroPages(file, chunk, fileOffset);
                }
            }
            regionOffset += region.Size;
        }
        RandomAccess.SetLength(file, (long)memory.TotalSize);
        FileSystem.Sync(file, path);
        MakeReadOnly(path);
        return written;
    }

    private static ulong WriteNonZeroPages(SafeFileHandle file, ReadOnlySpan<byte> chunk, long fileOffset)
    {
        ulong written = 0;
        int runStart = -1;
        for (int off = 0; off <= chunk.Length; off += Page)
        {
            bool nonZero = off < chunk.Length && chunk.Slice(off, Page).IndexOfAnyExcept((byte)0) >= 0;
            if (nonZero)
            {
                if (runStart < 0) runStart = off;
                continue;
            }
            if (runStart >= 0)
            {
                RandomAccess.Write(file, chunk[runStart..off], fileOffset + runStart);
                written += (ulong)(off - runStart);
                runStart = -1;
            }
        }
        return written;
    }

    internal static void WriteFileDurably(string path, byte[] bytes)
    {
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.None))
        {
            RandomAccess.Write(file, bytes, 0);
            FileSystem.Sync(file, path);
        }
        MakeReadOnly(path);
    }

    /// <summary>
    /// Snapshot files are immutable once written (clones map the memory file, and a change would corrupt them)
    /// and private to the user that wrote them (0400): the memory file is all of guest RAM.
    /// </summary>
    private static void MakeReadOnly(string path)
    {
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(path, PrivateFileMode);
    }

    /// <summary>The snapshot directory's mode: 0700 (owner only).</summary>
    public const UnixFileMode PrivateDirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Every snapshot file's mode: 0400 (owner read-only).</summary>
    public const UnixFileMode PrivateFileMode = UnixFileMode.UserRead;

    private static void TryDelete(string temp, ILogger log)
    {
        try
        {
            if (System.IO.Directory.Exists(temp)) System.IO.Directory.Delete(temp, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            SnapshotLog.PartialNotRemoved(log, temp, e.Message);
        }
    }
}
