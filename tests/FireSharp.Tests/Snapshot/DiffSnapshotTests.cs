using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>Diff snapshots (only the pages dirtied since the previous snapshot) of the counter guest.</summary>
[Collection("kvm")]
public sealed class DiffSnapshotTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private const ulong Sentinel2 = 0x2000_0000_0000_0000;

    /// <summary>A page the counter guest never touches (16 MiB), written only by the host, as a virtio device would.</summary>
    private const ulong HostPageGpa = 0x100_0000;

    private const int MaxDiffPages = 16;

    [SkippableFact]
    public void DiffRestoredInANewProcessContinuesFromTheDiffPoint()
    {
        var (vm, _) = StartCounter();
        string work = SnapshotTestSupport.TempDir();
        string full = Path.Combine(work, "full"), diff = Path.Combine(work, "diff");
        SnapshotResult fullResult, diffResult;
        using (vm)
        {
            Assert.True(vm.Pause(TestTimeout));
            vm.Machine.Memory.Write(CounterGpa, Sentinel);
            fullResult = SnapshotWriter.Create(vm, full, resume: true, trackDirty: true);
            Assert.Null(fullResult.DiffPages);
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1_000_000, TestTimeout), "VM did not run on after the full snapshot");
            // A host write to a page the guest never touches: KVM's dirty log cannot see it.
            vm.Machine.Memory.Write(HostPageGpa, 0xfeed_f00d_dead_beefUL);
            Assert.True(vm.Pause(TestTimeout));
            vm.Machine.Memory.Write(CounterGpa, Sentinel2);
            diffResult = SnapshotWriter.Create(vm, diff, resume: false, diff: true);
        }
        output.WriteLine($"full snapshot: {fullResult.MemoryBytesWritten} bytes of memory written; diff: {diffResult.DiffPages} pages, {diffResult.MemoryBytesWritten} bytes");
        Assert.Equal(full, diffResult.BaseDirectory);
        Assert.InRange(diffResult.DiffPages!.Value, 2, MaxDiffPages);
        Assert.Equal((ulong)diffResult.DiffPages.Value * 4096, diffResult.MemoryBytesWritten);
        Assert.True(diffResult.MemoryBytesWritten * 4 <= fullResult.MemoryBytesWritten,
            $"diff wrote {diffResult.MemoryBytesWritten} bytes, the full snapshot {fullResult.MemoryBytesWritten}");
        var info = DiffInfo.TryLoad(diff)!;
        Assert.Equal(diffResult.DiffPages.Value, info.PageCount);
        Assert.True(IsSet(info, HostPageGpa), "the host-written page is not in the diff");
        Assert.True(IsSet(info, CounterGpa), "the counter page is not in the diff");

        // Restore the diff in a new process; the child snapshots (fully) what it ran to.
        string after = Path.Combine(work, "after"), console = Path.Combine(work, "console.txt");
        var (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", diff, "--snapshot-dir", after, "--snapshot-after-ms", "100",
            "--snapshot-exit", "--serial", console, "--log-level", "Information");
        Assert.True(code == 0, $"firesharp run --restore (diff) exited {code}: {stderr}");
        Assert.InRange(CounterInFile(after), Sentinel2 + 1, Sentinel2 + (1UL << 50));
        Assert.Equal("", File.ReadAllText(console));
        // Its memory is the base with the diff's pages over it (but for the counter it kept counting).
        var expected = File.ReadAllBytes(Path.Combine(full, SnapshotWriter.MemoryFileName));
        var diffMemory = File.ReadAllBytes(Path.Combine(diff, SnapshotWriter.MemoryFileName));
        for (int page = 0; page < expected.Length / 4096; page++)
        {
            if (IsSet(info, (ulong)page * 4096)) Array.Copy(diffMemory, page * 4096, expected, page * 4096, 4096);
        }
        var actual = File.ReadAllBytes(Path.Combine(after, SnapshotWriter.MemoryFileName));
        Assert.Equal(0xfeed_f00d_dead_beefUL, BitConverter.ToUInt64(actual, (int)HostPageGpa));
        Array.Clear(expected, (int)CounterGpa, 8);
        Array.Clear(actual, (int)CounterGpa, 8);
        Assert.True(expected.AsSpan().SequenceEqual(actual), "restored memory is not the base plus the diff");
    }

    [SkippableFact]
    public void DiffOfADiffRestoresTheWholeChain()
    {
        var (vm, _) = StartCounter();
        string work = SnapshotTestSupport.TempDir();
        string full = Path.Combine(work, "full"), d1 = Path.Combine(work, "d1"), d2 = Path.Combine(work, "d2");
        ulong counterAtD2;
        using (vm)
        {
            SnapshotWriter.Create(vm, full, resume: true, trackDirty: true);
            ulong atFull = Counter(vm);
            // Only the guest writes the counter now: its page reaches d1 through KVM's dirty log.
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > atFull + 1_000_000, TestTimeout), "VM did not run on after the full snapshot");
            vm.Machine.Memory.Write(HostPageGpa, 0x1111UL);
            SnapshotWriter.Create(vm, d1, resume: true, diff: true);
            vm.Machine.Memory.Write(HostPageGpa + 4096, 0x2222UL);
            Assert.True(vm.Pause(TestTimeout));
            vm.Machine.Memory.Write(CounterGpa, Sentinel2);
            var r2 = SnapshotWriter.Create(vm, d2, resume: false, diff: true);
            Assert.Equal(d1, r2.BaseDirectory);
            counterAtD2 = Counter(vm);
        }
        var i1 = DiffInfo.TryLoad(d1)!;
        var i2 = DiffInfo.TryLoad(d2)!;
        Assert.Equal(full, i1.BaseDirectory);
        Assert.True(IsSet(i1, HostPageGpa) && !IsSet(i1, HostPageGpa + 4096));
        Assert.True(IsSet(i1, CounterGpa), "the page the guest wrote is not in the diff (KVM dirty log)");
        // Incremental: d2 holds the page written after d1, not the one written before.
        Assert.True(!IsSet(i2, HostPageGpa) && IsSet(i2, HostPageGpa + 4096));
        Assert.InRange(i2.PageCount, 2, MaxDiffPages);

        using var restored = SnapshotRestore.Restore(d2, new RestoreOverrides { Resume = false });
        Assert.Equal(counterAtD2, Counter(restored));
        Assert.Equal(0x1111UL, restored.Machine.Memory.Read<ulong>(HostPageGpa));
        Assert.Equal(0x2222UL, restored.Machine.Memory.Read<ulong>(HostPageGpa + 4096));
        restored.Resume();
        Assert.True(SpinWait.SpinUntil(() => Counter(restored) > Sentinel2 + 1_000_000, TestTimeout), "restored chain is not counting on");
        Assert.True(restored.Pause(TestTimeout));
    }

    [SkippableFact]
    public void DiffWithAMissingOrChangedBaseIsRejectedBeforeAnyVmExists()
    {
        var (vm, _) = StartCounter(16);
        string work = SnapshotTestSupport.TempDir();
        string full = Path.Combine(work, "full"), diff = Path.Combine(work, "diff");
        using (vm)
        {
            // No diff without tracking.
            var e = Assert.Throws<SnapshotException>(() => SnapshotWriter.Create(vm, diff, resume: true, diff: true));
            Assert.Equal(SnapshotErrorReason.InvalidVmState, e.Reason);
            Assert.False(Directory.Exists(diff));
            SnapshotWriter.Create(vm, full, resume: true, trackDirty: true);
            SnapshotWriter.Create(vm, diff, resume: false, diff: true);
        }
        int fds = KvmVmFds();

        // Changed: another snapshot in the base's place.
        string moved = Path.Combine(work, "moved");
        Directory.Move(full, moved);
        string other = TakeCounterSnapshot(16);
        Directory.Move(other, full);
        var changed = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(diff, new RestoreOverrides { Resume = false }));
        Assert.Equal(SnapshotErrorReason.BaseMismatch, changed.Reason);
        Assert.Contains("base", changed.Message);
        Assert.Equal(fds, KvmVmFds());

        // Missing.
        Directory.Delete(full, recursive: true);
        var missing = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(diff, new RestoreOverrides { Resume = false }));
        Assert.Equal(SnapshotErrorReason.NotFound, missing.Reason);
        Assert.Contains(full, missing.Message);
        Assert.Equal(fds, KvmVmFds());

        // The right base back in place: it restores.
        Directory.Move(moved, full);
        using var ok = SnapshotRestore.Restore(diff, new RestoreOverrides { Resume = false });
        Assert.Equal(VmState.Paused, ok.Machine.State);
    }

    private static bool IsSet(DiffInfo info, ulong fileOffset)
    {
        ulong page = fileOffset / 4096;
        return (info.Pages[page / 64] & (1UL << (int)(page % 64))) != 0;
    }
}
