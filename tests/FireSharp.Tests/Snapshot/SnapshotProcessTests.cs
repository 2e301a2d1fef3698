using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// Restore in a new process: the firesharp executable (`run --restore`) restores a snapshot taken in
/// this process, runs it, and reports the guest's progress by writing a second snapshot
/// (`--snapshot-after-ms N --snapshot-dir D --snapshot-exit`), whose memory file this test reads.
/// </summary>
[Collection("kvm")]
public sealed class SnapshotProcessTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static string[] RestoreArgs(string from, string to, string console) =>
        ["run", "--insecure-unauthenticated", "--restore", from, "--snapshot-dir", to, "--snapshot-after-ms", "100", "--snapshot-exit", "--serial", console, "--log-level", "Information"];

    [SkippableFact]
    public void GuestContinuesInANewProcessExactlyFromTheSnapshot()
    {
        string first = TakeCounterSnapshot();
        string work = SnapshotTestSupport.TempDir();
        string second = Path.Combine(work, "after"), console = Path.Combine(work, "console.txt");
        var (code, _, stderr) = RunFiresharp(RestoreArgs(first, second, console));
        Assert.True(code == 0, $"firesharp run --restore exited {code}: {stderr}");
        Assert.Contains("restored", stderr);
        Assert.Contains("guest running", stderr);

        ulong after = CounterInFile(second);
        // It counted on from the sentinel (a guest that started over would be near 0 and print again).
        Assert.InRange(after, Sentinel + 1, Sentinel + (1UL << 50));
        Assert.Equal("", File.ReadAllText(console));
        // The rest of memory is exactly the snapshot's: only the counter's 8 bytes differ.
        var a = File.ReadAllBytes(Path.Combine(first, SnapshotWriter.MemoryFileName));
        var b = File.ReadAllBytes(Path.Combine(second, SnapshotWriter.MemoryFileName));
        Assert.Equal(a.Length, b.Length);
        Array.Clear(a, (int)CounterGpa, 8);
        Array.Clear(b, (int)CounterGpa, 8);
        Assert.True(a.AsSpan().SequenceEqual(b), "guest memory other than the counter changed");
        // The child's vCPU state is the continuation of the saved one: same ring-3 loop, same stack.
        var s1 = SnapshotReader.Load(first).State.Vcpus[0];
        var s2 = SnapshotReader.Load(second).State.Vcpus[0];
        Assert.Equal(s1.Regs.rsp, s2.Regs.rsp);
        Assert.Equal(s1.Sregs.cr3, s2.Sregs.cr3);
        Assert.Equal(s1.Sregs.cs.selector, s2.Sregs.cs.selector);
        Assert.InRange(s2.Regs.rip, s1.Regs.rip - 16, s1.Regs.rip + 16);
    }

    [SkippableFact]
    public void ThreeClonesRestoreConcurrentlyInTheirOwnProcesses()
    {
        string snapshot = TakeCounterSnapshot();
        byte[] memoryBefore = File.ReadAllBytes(Path.Combine(snapshot, SnapshotWriter.MemoryFileName));
        string work = SnapshotTestSupport.TempDir();
        var clones = Enumerable.Range(0, 3).Select(i =>
        {
            string to = Path.Combine(work, $"clone{i}"), console = Path.Combine(work, $"console{i}.txt");
            return (To: to, Process: StartFiresharp(RestoreArgs(snapshot, to, console)));
        }).ToList();
        var results = clones.Select(c => (c.To, Result: Finish(c.Process))).ToList();
        foreach (var (to, (code, _, stderr)) in results)
        {
            Assert.True(code == 0, $"clone exited {code}: {stderr}");
            Assert.InRange(CounterInFile(to), Sentinel + 1, Sentinel + (1UL << 50));
        }
        // Copy-on-write mappings: no clone's writes reached the shared memory file.
        Assert.True(memoryBefore.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(snapshot, SnapshotWriter.MemoryFileName))));
    }

    [SkippableFact]
    public void RestoreOfABadSnapshotIsBadInput()
    {
        KvmTestSupport.RequireKvm();
        string missing = Path.Combine(SnapshotTestSupport.TempDir(), "none");
        var (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", missing);
        Assert.Equal(2, code);
        Assert.Contains("NotFound", stderr);

        string snapshot = TakeCounterSnapshot(16);
        string damaged = CopySnapshot(snapshot);
        string state = Path.Combine(damaged, SnapshotWriter.StateFileName);
        var bytes = File.ReadAllBytes(state);
        File.WriteAllBytes(state, bytes[..^10]);
        (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", damaged);
        Assert.Equal(2, code);
        Assert.Contains("Truncated", stderr);

        (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", snapshot, "--kernel", TestPaths.Guest("hello"));
        Assert.Equal(2, code);
        Assert.Contains("exclude each other", stderr);
        (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", snapshot, "--snapshot-dir", snapshot, "--snapshot-after-ms", "1");
        Assert.Equal(2, code);
        Assert.Contains("already exists", stderr);
    }

    [SkippableFact]
    public void ExitAfterMsStopsARestoredGuestCleanly()
    {
        string snapshot = TakeCounterSnapshot(16);
        var (code, _, stderr) = RunFiresharp("run", "--insecure-unauthenticated", "--restore", snapshot, "--exit-after-ms", "50", "--log-level", "Information");
        Assert.True(code == 0, stderr);
        Assert.Contains("--exit-after-ms 50 elapsed", stderr);
    }
}
