using FireSharp.Daemon;
using FireSharp.Daemon.Workers;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Tests.Snapshot;
using FireSharp.Tests.Support;
using Google.Protobuf;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Jail;

/// <summary>
/// Issue 18, must-have 2, in the jail: stage 1 of a jailed worker (root, before any guest code) verifies the snapshot
/// to restore on the fds it then hands over. A state file with one byte flipped and its CRC recomputed, or a memory
/// file replaced by a copy after the snapshot, is refused there, and the daemon's launcher turns the refusal into the
/// same typed API error as the daemon's own check (InvalidArgument on dir), not "the worker ended while starting".
/// The daemon's early check is bypassed here on purpose (the launcher is called directly), as a file swapped between
/// that check and the launch would be.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class JailSnapshotVerificationTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly string _dir = Path.Combine("/tmp", "fs-stage1-" + Guid.NewGuid().ToString("N")[..8]);

    public JailSnapshotVerificationTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        SnapshotTestSupport.CleanUp();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<VmApiException> LaunchJailedAsync(string snapshot, SnapshotKeys keys)
    {
        var plan = new JailPlan { Uid = 64990, Gid = 64990, Root = Path.Combine(_dir, "root"), UnsharePath = "/usr/bin/unshare", SnapshotDir = snapshot };
        plan.SnapshotKeys.AddRange(keys.All.Select(k => new FireSharp.Proto.Worker.SnapshotKey { Id = k.Id, Key = ByteString.CopyFrom(k.Key) }));
        var launch = new WorkerLaunch("v", Path.Combine(_dir, "w.sock"), Path.Combine(_dir, "w.log")) { Jail = plan, JailPlanPath = Path.Combine(_dir, "plan.pb") };
        var launcher = new ProcessWorkerLauncher(Path.Combine(AppContext.BaseDirectory, "firesharp-vmm"));
        return await Assert.ThrowsAsync<VmApiException>(() => launcher.LaunchAsync(launch, CancellationToken.None).WaitAsync(Timeout));
    }

    [SkippableFact]
    public async Task Stage_one_refuses_a_forged_state_file_and_a_replaced_memory_file_with_the_typed_error()
    {
        KvmTestSupport.RequireKvm();
        Assert.True(Environment.IsPrivilegedProcess, "the jail's stage 1 needs root");
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(_dir, "keys"));
        string snap = TakeCounterSnapshot(16, keys.Signing);
        string state = Path.Combine(snap, SnapshotWriter.StateFileName);
        byte[] original = File.ReadAllBytes(state);

        File.WriteAllBytes(state, FlipContentByteWithValidCrc(original, 40));
        var e = await LaunchJailedAsync(snap, keys);
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("dir", e.Field);
        Assert.Contains("HMAC-SHA256 mismatch", e.Message, StringComparison.Ordinal);
        Assert.Contains(snap, e.Message, StringComparison.Ordinal);
        File.WriteAllBytes(state, original);

        // Same size and bytes, but another inode and mtime than the MAC recorded.
        string memory = Path.Combine(snap, SnapshotWriter.MemoryFileName);
        File.Copy(memory, memory + ".copy");
        File.Move(memory + ".copy", memory, overwrite: true);
        e = await LaunchJailedAsync(snap, keys);
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("dir", e.Field);
        Assert.Contains("changed after the snapshot", e.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Stage_one_refuses_a_snapshot_signed_with_a_key_the_plan_does_not_hold()
    {
        KvmTestSupport.RequireKvm();
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(_dir, "keys"));
        string snap = TakeCounterSnapshot(16, keys.Signing);
        var other = SnapshotKeys.OpenOrCreate(Path.Combine(_dir, "other"));
        var e = await LaunchJailedAsync(snap, other);
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Contains("not one of this host's snapshot keys", e.Message, StringComparison.Ordinal);
    }
}
