using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Snapshot;

/// <summary>Diff snapshots through the daemon's CreateSnapshot (diff, track_dirty) and RestoreVm, with the counter guest.</summary>
[Collection("kvm")]
public sealed class DiffApiTests(ITestOutputHelper output)
{
    private static ulong Counter(string snapshotDir)
    {
        using var f = File.OpenRead(Path.Combine(snapshotDir, "memory"));
        f.Position = 0x200000;
        Span<byte> b = stackalloc byte[8];
        f.ReadExactly(b);
        return BitConverter.ToUInt64(b);
    }

    [SkippableFact]
    public async Task A_diff_snapshot_through_the_daemon_restores_from_its_base()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        await c.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.ReadConsoleUntilAsync("src", "COUNTING");
        string full = Path.Combine(s.Options.StateDir, "full"), diff = Path.Combine(s.Options.StateDir, "diff"), again = Path.Combine(s.Options.StateDir, "again");

        // No diff before tracking is on.
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = diff, Diff = true, Resume = true }).ResponseAsync);
        Assert.False(Directory.Exists(diff));

        var f = await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = full, Resume = true, TrackDirty = true });
        Assert.Equal("", f.BaseDir);
        Assert.Equal(0u, f.DiffPages);
        var d = await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = diff, Diff = true });
        Assert.Equal(full, d.BaseDir);
        Assert.InRange(d.DiffPages, 1u, 16u);
        Assert.Equal(d.DiffPages * 4096UL, d.MemoryBytesWritten);
        Assert.True(d.MemoryBytesWritten < f.MemoryBytesWritten, $"diff {d.MemoryBytesWritten} bytes, full {f.MemoryBytesWritten}");
        ulong atDiff = Counter(diff);
        Assert.True(atDiff > Counter(full), "the guest counted between the snapshots");

        var clone = await c.RestoreVmAsync(new RestoreVmRequest { Dir = diff, Id = "clone", Paused = true });
        Assert.Equal(VmState.Paused, clone.State);
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "clone", Dir = again });
        Assert.Equal(atDiff, Counter(again));

        // A diff whose base is gone is refused in the daemon, before any worker starts.
        string moved = full + "-moved";
        Directory.Move(full, moved);
        int workers = s.Launcher.LiveCount;
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = diff, Id = "clone2", Paused = true }).ResponseAsync, "dir");
        Assert.Equal(workers, s.Launcher.LiveCount);
        Directory.Move(moved, full);

        await c.DeleteVmAsync(new DeleteVmRequest { Id = "clone", Force = true });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "src", Force = true });
    }
}
