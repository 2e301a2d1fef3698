using FireSharp.Devices.Legacy;
using FireSharp.Memory;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>Snapshot and restore of the counter guest within this process (KVM).</summary>
[Collection("kvm")]
public sealed class SnapshotRestoreTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    [SkippableFact]
    public void RestoredGuestContinuesFromTheSnapshotPoint()
    {
        string dir = TakeCounterSnapshot();
        var state = SnapshotReader.Load(dir).State;
        var console = new MemorySerialSink();
        using var vm = SnapshotRestore.Restore(dir, new RestoreOverrides { Resume = false, Serial = console });
        Assert.True(vm.IsRestored);
        Assert.Equal(VmState.Paused, vm.Machine.State);
        Assert.NotNull(vm.Machine.Memory.BackingFilePath);

        // Before it runs: memory is the file's content, registers are the saved ones.
        AssertMemoryEqualsFile(vm.Machine.Memory, Path.Combine(dir, SnapshotWriter.MemoryFileName));
        Assert.Equal(Sentinel, Counter(vm));
        var regs = vm.Machine.Vcpus[0].GetRegs();
        Assert.Equal(state.Vcpus[0].Regs.rip, regs.rip);
        Assert.Equal(state.Vcpus[0].Regs.rsp, regs.rsp);
        Assert.Equal(3UL, vm.Machine.Vcpus[0].GetSregs().cs.selector & 3UL); // still in ring 3
        Assert.Equal(state.Vcpus[0].Sregs.cr3, vm.Machine.Vcpus[0].GetSregs().cr3);

        vm.Resume();
        Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1_000_000, TestTimeout), "restored guest is not counting on from the snapshot value");
        Assert.True(vm.Pause(TestTimeout));
        Assert.InRange(Counter(vm), Sentinel, Sentinel + (1UL << 50));
        // It continued: a guest that started over would have printed its banner again and zeroed the counter.
        Assert.Equal("", console.GetText());
        // Copy-on-write: the guest's writes never reach the snapshot's memory file.
        Assert.Equal(Sentinel, CounterInFile(dir));
        Assert.Equal(VmExitKind.Stopped, vm.Stop().Kind);
    }

    [SkippableFact]
    public void RunningVmIsSnapshottedAndResumes()
    {
        var (vm, _) = StartCounter();
        using (vm)
        {
            string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
            var result = SnapshotWriter.Create(vm, dir, resume: true);
            Assert.Equal(VmState.Running, vm.Machine.State);
            ulong saved = CounterInFile(dir);
            Assert.True(saved > 1000);
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > saved + 1_000_000, TestTimeout), "VM did not run on after the snapshot");
            Assert.Equal(32 * MemoryLayout.MiB, result.MemoryBytes);
            Assert.Equal(32 * MemoryLayout.MiB, (ulong)new FileInfo(Path.Combine(dir, SnapshotWriter.MemoryFileName)).Length);
            // Sparse: only the touched pages were written, and they are the only allocated blocks.
            Assert.True(result.MemoryBytesWritten is > 0 and < 1024 * 1024, $"{result.MemoryBytesWritten} bytes written");
            // No temporary directory is left beside the snapshot.
            Assert.Equal(["snap"], Directory.GetFileSystemEntries(Path.GetDirectoryName(dir)!).Select(Path.GetFileName));
        }
    }

    [SkippableFact]
    public void SnapshotOfARestoredVmMatchesItsMemory()
    {
        string first = TakeCounterSnapshot();
        using var vm = SnapshotRestore.Restore(first, new RestoreOverrides());
        Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1000, TestTimeout));
        string second = Path.Combine(SnapshotTestSupport.TempDir(), "snap2");
        SnapshotWriter.Create(vm, second, resume: false);
        AssertMemoryEqualsFile(vm.Machine.Memory, Path.Combine(second, SnapshotWriter.MemoryFileName));
        Assert.True(CounterInFile(second) > Sentinel);
        // Everything but the counter is as it was in the first snapshot.
        var a = File.ReadAllBytes(Path.Combine(first, SnapshotWriter.MemoryFileName));
        var b = File.ReadAllBytes(Path.Combine(second, SnapshotWriter.MemoryFileName));
        Array.Clear(a, (int)CounterGpa, 8);
        Array.Clear(b, (int)CounterGpa, 8);
        Assert.True(a.AsSpan().SequenceEqual(b), "memory other than the counter changed across restore and snapshot");
    }

    [SkippableFact]
    public void ClonesFromOneSnapshotDivergeIndependently()
    {
        string dir = TakeCounterSnapshot();
        var clones = new List<MicroVm>();
        try
        {
            for (int i = 0; i < 3; i++) clones.Add(SnapshotRestore.Restore(dir, new RestoreOverrides { Resume = false }));
            // Give each clone its own counter band: writes to one clone's memory are private to it.
            for (int i = 0; i < 3; i++) clones[i].Machine.Memory.Write(CounterGpa, Band(i));
            for (int i = 0; i < 3; i++) Assert.Equal(Band(i), Counter(clones[i]));
            foreach (var c in clones) c.Resume();
            for (int i = 0; i < 3; i++)
            {
                int k = i;
                Assert.True(SpinWait.SpinUntil(() => Counter(clones[k]) > Band(k) + 1_000_000, TestTimeout), $"clone {k} is not counting");
            }
            foreach (var c in clones) Assert.True(c.Pause(TestTimeout));
            for (int i = 0; i < 3; i++) Assert.InRange(Counter(clones[i]), Band(i) + 1_000_000, Band(i) + (1UL << 50));
            Assert.Equal(Sentinel, CounterInFile(dir));
        }
        finally
        {
            foreach (var c in clones) c.Dispose();
        }

        static ulong Band(int i) => (ulong)(i + 2) << 56;
    }

    [SkippableFact]
    public void SnapshotOfAVmThatIsNotRunningOrPausedIsRefused()
    {
        KvmTestSupport.RequireKvm();
        using (var created = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("counter"), MemoryMib = 16 }))
        {
            string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
            var e = Assert.Throws<SnapshotException>(() => SnapshotWriter.Create(created, dir, resume: true));
            Assert.Equal(SnapshotErrorReason.InvalidVmState, e.Reason);
            Assert.False(Directory.Exists(dir));
        }
        using (var ended = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("hello"), MemoryMib = 16 }))
        {
            ended.Start();
            Assert.True(ended.Exited.Wait(TestTimeout));
            string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
            var e = Assert.Throws<SnapshotException>(() => SnapshotWriter.Create(ended, dir, resume: true));
            Assert.Equal(SnapshotErrorReason.InvalidVmState, e.Reason);
            Assert.Contains("exited", e.Message);
            Assert.False(Directory.Exists(dir));
        }
    }

    [SkippableFact]
    public void ExistingSnapshotDirectoryIsRefusedAndTheVmRunsOn()
    {
        var (vm, _) = StartCounter(16);
        using (vm)
        {
            string dir = SnapshotTestSupport.TempDir(); // exists (empty)
            var e = Assert.Throws<SnapshotException>(() => SnapshotWriter.Create(vm, dir, resume: false));
            Assert.Equal(SnapshotErrorReason.DirectoryExists, e.Reason);
            Assert.Empty(Directory.GetFileSystemEntries(dir));
            Assert.Equal(VmState.Running, vm.Machine.State);
        }
    }

    [SkippableFact]
    public void FullDiskLeavesNoPartialSnapshotAndTheVmRunsOn()
    {
        KvmTestSupport.RequireKvm();
        TestEnvironment.RequireRoot("mounting a small tmpfs");
        var (vm, _) = StartCounter(16);
        using (vm)
        {
            // Size the file system from a real snapshot of this VM: once too small for the memory
            // file's data, once big enough for the memory file but not for the state file after it.
            string probe = Path.Combine(SnapshotTestSupport.TempDir(), "probe");
            var full = SnapshotWriter.Create(vm, probe, resume: true);
            long memoryPages = (long)full.MemoryBytesWritten / 4096;
            foreach (var (pages, failingFile) in new[] { (memoryPages / 2, SnapshotWriter.MemoryFileName), (memoryPages + 1, SnapshotWriter.StateFileName) })
            {
                string mount = SnapshotTestSupport.TempDir();
                Mount(mount, pages * 4096);
                try
                {
                    string dir = Path.Combine(mount, "snap");
                    var e = Assert.Throws<SnapshotException>(() => SnapshotWriter.Create(vm, dir, resume: false));
                    Assert.Equal(SnapshotErrorReason.DiskFull, e.Reason);
                    Assert.Contains(failingFile, e.Message);
                    Assert.Empty(Directory.GetFileSystemEntries(mount)); // no snapshot, no temporary directory
                    // It was running, so it runs on (even though resume was false: the snapshot failed).
                    Assert.Equal(VmState.Running, vm.Machine.State);
                    ulong now = Counter(vm);
                    Assert.True(SpinWait.SpinUntil(() => Counter(vm) > now + 1_000_000, TestTimeout), "VM is not running after the failed snapshot");
                }
                finally
                {
                    Unmount(mount);
                }
            }
            Assert.False(vm.Exited.IsCompleted);
        }
    }

    private static void Mount(string dir, long bytes)
    {
        var (code, err) = Exec("mount", "-t", "tmpfs", "-o", $"size={bytes},mode=0755", "tmpfs", dir);
        Assert.True(code == 0, $"mount tmpfs failed: {err}");
    }

    private static void Unmount(string dir) => Exec("umount", dir);

    private static (int, string) Exec(string file, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err);
    }

    private static void AssertMemoryEqualsFile(GuestMemory memory, string path)
    {
        var file = File.ReadAllBytes(path);
        Assert.Equal((long)memory.TotalSize, file.LongLength);
        var region = Assert.Single(memory.Regions);
        const int Chunk = 1 << 20;
        for (ulong off = 0; off < region.Size; off += Chunk)
        {
            if (!memory.GetSpan(off, Chunk).SequenceEqual(file.AsSpan((int)off, Chunk)))
                Assert.Fail($"guest memory differs from {path} in the MiB at 0x{off:x}");
        }
    }
}
