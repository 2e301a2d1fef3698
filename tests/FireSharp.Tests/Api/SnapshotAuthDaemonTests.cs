using FireSharp.Proto.V1;
using FireSharp.Snapshot;
using FireSharp.Tests.Snapshot;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// Issue 18, must-have 2, through the real daemon (`firesharp serve` with `firesharp-vmm` workers) under umask 000:
/// snapshots are 0700/0400, signed with the daemon's key (made at its first start, 0600 in a 0700 directory), and a
/// state file with one byte flipped and its CRC recomputed, or a memory file touched since, is refused by RestoreVm
/// with InvalidArgument naming the snapshot, before any worker starts. A key added later (a rotation) signs new
/// snapshots, and the old ones still restore.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SnapshotAuthDaemonTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task Daemon_snapshots_are_private_signed_and_a_forged_state_file_is_refused()
    {
        await using var d = await DaemonUnderTest.StartAsync(output, umask: "000");
        string keyDir = Path.Combine(d.StateDir, "snapshot-keys");
        Assert.Equal(SnapshotWriter.PrivateDirectoryMode, File.GetUnixFileMode(keyDir));
        var keyFiles = Directory.GetFiles(keyDir, "*.key");
        Assert.Single(keyFiles);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFiles[0]));

        await d.Client.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = ApiTestServer.Spec("counter"), Start = true }).ResponseAsync.WaitAsync(Timeout);
        await d.ReadConsoleUntilAsync("src", "COUNTING").WaitAsync(Timeout);
        string snap = Path.Combine(d.StateDir, "snap");
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = snap, Resume = true }).ResponseAsync.WaitAsync(Timeout);
        SnapshotFileModeTests.AssertPrivate(snap);
        Assert.True(File.Exists(Path.Combine(snap, SnapshotMac.FileName)));
        var keys = SnapshotKeys.FromPath(keyDir);
        SnapshotFiles.Verify(snap, keys); // signed with the daemon's key

        // One byte flipped, CRC recomputed: refused before a worker starts.
        int workers = d.WorkerPids().Count;
        string state = Path.Combine(snap, SnapshotWriter.StateFileName);
        byte[] original = File.ReadAllBytes(state);
        File.WriteAllBytes(state, SnapshotTestSupport.FlipContentByteWithValidCrc(original, 40));
        var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "forged" }).ResponseAsync.WaitAsync(Timeout), "dir");
        Assert.Contains(snap, e.Status.Detail);
        Assert.Contains("HMAC", e.Status.Detail);
        Assert.Equal(workers, d.WorkerPids().Count);
        File.WriteAllBytes(state, original);

        // The memory file touched since the snapshot: refused.
        string memory = Path.Combine(snap, SnapshotWriter.MemoryFileName);
        var mtime = File.GetLastWriteTimeUtc(memory);
        File.SetLastWriteTimeUtc(memory, mtime.AddSeconds(5));
        e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "touched" }).ResponseAsync.WaitAsync(Timeout), "dir");
        Assert.Contains("changed after the snapshot", e.Status.Detail);
        File.SetLastWriteTimeUtc(memory, mtime);

        // The memory file replaced by a copy (same size and bytes, a new inode and mtime): refused.
        string copy = memory + ".copy";
        File.Copy(memory, copy);
        File.Move(copy, memory, overwrite: true);
        e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "replaced" }).ResponseAsync.WaitAsync(Timeout), "dir");
        Assert.Contains("changed after the snapshot", e.Status.Detail);
        Assert.Equal(workers, d.WorkerPids().Count);

        string second = Path.Combine(d.StateDir, "snap2");
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = second, Resume = true }).ResponseAsync.WaitAsync(Timeout);
        // Rotation: a key added by hand signs the next snapshot; the earlier one (signed with the old key) still restores.
        var added = SnapshotKeys.AddKey(keyDir);
        string third = Path.Combine(d.StateDir, "snap3");
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = third, Resume = true }).ResponseAsync.WaitAsync(Timeout);
        SnapshotFiles.Verify(third, new SnapshotKeys([added]));
        Assert.Throws<SnapshotException>(() => SnapshotFiles.Verify(second, new SnapshotKeys([added])));
        var old = await d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = second, Id = "old-key" }).ResponseAsync.WaitAsync(Timeout);
        Assert.Equal(VmState.Running, old.State);
        // The jailed worker got the snapshot as fds its jailer verified, and no key: the plan file it read has none.
        var plan = FireSharp.Proto.Worker.JailPlan.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(d.StateDir, "jail", "old-key", "plan.pb")));
        Assert.Empty(plan.SnapshotKeys);
        Assert.Equal(second, plan.SnapshotDir);
        Assert.Contains(plan.Files, f => f.Path == Path.Combine(second, SnapshotWriter.StateFileName) && f.ReadOnly);
        Assert.Contains(plan.Files, f => f.Path == Path.Combine(second, SnapshotWriter.MemoryFileName) && f.ReadOnly);
        var fresh = await d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = third, Id = "new-key" }).ResponseAsync.WaitAsync(Timeout);
        Assert.Equal(VmState.Running, fresh.State);

        foreach (var id in (string[])["new-key", "old-key", "src"])
            await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true }).ResponseAsync.WaitAsync(Timeout);
        d.AssertNothingLeft();
    }
}
