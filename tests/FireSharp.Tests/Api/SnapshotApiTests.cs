using FireSharp.Proto.V1;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>CreateSnapshot and RestoreVm through the real daemon in-process (in-process workers), with the counter guest.</summary>
[Collection("kvm")]
public sealed class SnapshotApiTests(ITestOutputHelper output)
{
    /// <summary>counter.S keeps its 64-bit counter at guest physical 0x200000: the same offset in the (first region of the) memory file.</summary>
    private static ulong Counter(string snapshotDir)
    {
        using var f = File.OpenRead(Path.Combine(snapshotDir, "memory"));
        f.Position = 0x200000;
        Span<byte> b = stackalloc byte[8];
        f.ReadExactly(b);
        return BitConverter.ToUInt64(b);
    }

    [SkippableFact]
    public async Task A_snapshot_restores_as_a_new_vm_that_continues_from_the_snapshot_point()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        await c.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.ReadConsoleUntilAsync("src", "COUNTING");
        string snap1 = Path.Combine(s.Options.StateDir, "snap1"), snap2 = Path.Combine(s.Options.StateDir, "snap2"), snap3 = Path.Combine(s.Options.StateDir, "snap3");

        // Without resume the source stays paused.
        var info = await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = snap1 });
        Assert.Equal(snap1, info.Dir);
        Assert.Equal(16UL << 20, info.MemoryBytes);
        Assert.InRange(info.MemoryBytesWritten, 1UL, info.MemoryBytes - 1); // sparse: most of 16 MiB is zero
        Assert.True(info.StateFileBytes > 0);
        Assert.Equal(VmState.Paused, info.Vm.State);
        Assert.Equal(VmState.Paused, (await c.GetVmAsync(new GetVmRequest { Id = "src" })).State);
        ulong atSnapshot = Counter(snap1);
        Assert.True(atSnapshot > 0, "the guest was counting when snapshotted");

        // Restored paused into a new worker, it holds exactly the snapshot's counter.
        var clone = await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap1, Id = "clone", Paused = true, Labels = { ["from"] = "snap1" } });
        Assert.Equal(VmState.Paused, clone.State);
        Assert.Equal(16, clone.Spec.Machine.MemMib);
        Assert.Equal("snap1", clone.Labels["from"]);
        Assert.NotEqual(0, clone.WorkerPid);
        Assert.Equal(2, s.Launcher.LiveCount);
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "clone", Dir = snap2 });
        Assert.Equal(atSnapshot, Counter(snap2));

        // Both run; the clone counts on from the snapshot point.
        Assert.Equal(VmState.Running, (await c.ResumeVmAsync(new ResumeVmRequest { Id = "clone" })).State);
        Assert.Equal(VmState.Running, (await c.ResumeVmAsync(new ResumeVmRequest { Id = "src" })).State);
        var vms = (await c.ListVmsAsync(new ListVmsRequest())).Vms;
        Assert.Equal(["clone", "src"], vms.Select(v => v.Id));
        Assert.All(vms, v => Assert.Equal(VmState.Running, v.State));
        var again = await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "clone", Dir = snap3, Resume = true });
        Assert.Equal(VmState.Running, again.Vm.State);
        Assert.True(Counter(snap3) > atSnapshot, $"the clone's counter {Counter(snap3)} did not move on from {atSnapshot}");

        // A restored VM that ended starts again from its snapshot.
        Assert.Equal(VmState.Stopped, (await c.StopVmAsync(new StopVmRequest { Id = "clone", Force = true })).State);
        Assert.Equal(VmState.Running, (await c.StartVmAsync(new StartVmRequest { Id = "clone" })).State);

        await c.DeleteVmAsync(new DeleteVmRequest { Id = "clone", Force = true });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "src", Force = true });
        Assert.Empty((await c.ListVmsAsync(new ListVmsRequest())).Vms);
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
        Assert.True(Directory.Exists(snap1), "a snapshot outlives the VMs");
    }

    [SkippableFact]
    public async Task Snapshot_errors_map_to_status_codes_and_leave_nothing_behind()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        await c.CreateVmAsync(new CreateVmRequest { Id = "a", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.ReadConsoleUntilAsync("a", "COUNTING");
        string snap = Path.Combine(s.Options.StateDir, "snap");
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "a", Dir = snap, Resume = true });

        // CreateSnapshot: the directory exists (the VM runs on unharmed), unknown VM, relative dir, missing parent.
        await RpcAssert.FailsAsync(StatusCode.AlreadyExists, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "a", Dir = snap }).ResponseAsync, "dir");
        Assert.Equal(VmState.Running, (await c.GetVmAsync(new GetVmRequest { Id = "a" })).State);
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "nope", Dir = snap + "x" }).ResponseAsync, "id");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "a", Dir = "rel/dir" }).ResponseAsync, "dir");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "a", Dir = snap + "-no/such" }).ResponseAsync, "dir");
        Assert.False(Directory.Exists(snap + "-no"));
        Assert.Equal(VmState.Running, (await c.GetVmAsync(new GetVmRequest { Id = "a" })).State);

        // A stopped VM cannot be snapshotted.
        await c.CreateVmAsync(new CreateVmRequest { Id = "h", Spec = ApiTestServer.Spec("hello"), Start = true });
        await s.WaitForStateAsync("h", VmState.Stopped);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "h", Dir = snap + "-h" }).ResponseAsync);
        Assert.False(Directory.Exists(snap + "-h"));

        // RestoreVm of bad snapshots: refused before any worker starts; no VM, no files.
        int launched = s.Launcher.Launched, dirs = s.VmDirs().Length;
        string corrupt = Copy(snap, snap + "-corrupt");
        var state = File.ReadAllBytes(Path.Combine(corrupt, "vmstate"));
        state[state.Length / 2] ^= 0x5a;
        File.WriteAllBytes(Path.Combine(corrupt, "vmstate"), state);
        var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = corrupt, Id = "bad1" }).ResponseAsync, "dir");
        output.WriteLine(e.Status.Detail);
        string truncated = Copy(snap, snap + "-trunc");
        File.WriteAllBytes(Path.Combine(truncated, "vmstate"), state[..(state.Length / 3)]);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = truncated, Id = "bad2" }).ResponseAsync, "dir");
        string shortMemory = Copy(snap, snap + "-mem");
        using (var m = File.OpenWrite(Path.Combine(shortMemory, "memory"))) m.SetLength(8 << 20);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = shortMemory, Id = "bad3" }).ResponseAsync, "dir");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = snap + "-none", Id = "bad4" }).ResponseAsync, "dir");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.RestoreVmAsync(new RestoreVmRequest
        {
            Dir = snap, Id = "bad5", Overrides = new RestoreOverrides { DrivePaths = { ["rootfs"] = "/tmp/x.img" } },
        }).ResponseAsync, "overrides.drive_paths[rootfs]");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "" }).ResponseAsync, "id");
        await RpcAssert.FailsAsync(StatusCode.AlreadyExists, () => c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "a" }).ResponseAsync, "id");
        Assert.Equal(launched, s.Launcher.Launched);
        Assert.Equal(dirs, s.VmDirs().Length);
        Assert.Equal(["a", "h"], (await c.ListVmsAsync(new ListVmsRequest())).Vms.Select(v => v.Id));

        // The good snapshot still restores.
        Assert.Equal(VmState.Running, (await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "good" })).State);
        foreach (var id in (string[])["a", "h", "good"]) await c.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
    }

    private static string Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        return to;
    }
}
