using System.Text.Json;
using FireSharp.Daemon.Workers;
using FireSharp.Worker.Protocol;
using FireSharp.Proto.V1;
using Xunit.Abstractions;

using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Api;

/// <summary>
/// Snapshots with the real daemon (build/firesharp, or FIRESHARP_BIN) and `firesharp-vmm` worker processes, through
/// `firesharp snapshot create|restore`: the restored VM runs in a worker process of its own and continues from the
/// snapshot point.
/// </summary>
[Collection("kvm")]
public sealed class SnapshotDaemonTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Snapshot_create_and_restore_through_the_cli_into_a_new_worker_process()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var src = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = ApiTestServer.Spec("counter"), Start = true });
        await d.ReadConsoleUntilAsync("src", "COUNTING");
        string snap = Path.Combine(d.StateDir, "snap");
        string[] cli = ["snapshot", "--socket", d.Socket, "--json"];

        var (code, json, err) = await DaemonUnderTest.RunCliAsync([.. cli, "create", "src", snap, "--track-dirty"]);
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(json))
        {
            Assert.Equal(snap, doc.RootElement.GetProperty("dir").GetString());
            Assert.Equal("VM_STATE_PAUSED", doc.RootElement.GetProperty("vm").GetProperty("state").GetString());
        }
        ulong atSnapshot = Counter(snap);
        Assert.True(atSnapshot > 0);

        (code, json, err) = await DaemonUnderTest.RunCliAsync([.. cli, "restore", snap, "--id", "clone", "--paused", "--label", "via=cli"]);
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(json))
        {
            Assert.Equal("clone", doc.RootElement.GetProperty("id").GetString());
            Assert.Equal("VM_STATE_PAUSED", doc.RootElement.GetProperty("state").GetString());
        }
        var clone = await d.Client.GetVmAsync(new GetVmRequest { Id = "clone" });
        Assert.NotEqual(src.WorkerPid, clone.WorkerPid);
        Assert.True(ProcInfo.IsAlive(clone.WorkerPid));
        Assert.Equal(2, d.WorkerPids().Count);
        // The new process holds exactly the snapshot's guest state.
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "clone", Dir = snap + "-clone", Resume = true });
        Assert.Equal(atSnapshot, Counter(snap + "-clone"));
        Assert.Equal(VmState.Running, (await d.Client.GetVmAsync(new GetVmRequest { Id = "clone" })).State);

        // Refusals: the exit code of the table (1 the operation failed, 2 bad input) and one line on stderr; no VM is created.
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. cli, "create", "src", snap]);
        Assert.Equal(1, code);
        Assert.StartsWith("firesharp: error: already exists: ", err);
        Directory.CreateDirectory(snap + "-bad");
        File.WriteAllBytes(Path.Combine(snap + "-bad", "vmstate"), "not a snapshot"u8.ToArray());
        File.Copy(Path.Combine(snap, "memory"), Path.Combine(snap + "-bad", "memory"));
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. cli, "restore", snap + "-bad", "--id", "bad"]);
        Assert.Equal(2, code);
        Assert.StartsWith("firesharp: error: ", err);
        Assert.Equal(["clone", "src"], (await d.Client.ListVmsAsync(new ListVmsRequest())).Vms.Select(v => v.Id));
        Assert.Equal(2, d.WorkerPids().Count);

        // A diff on top of the --track-dirty snapshot names its base.
        (code, json, err) = await DaemonUnderTest.RunCliAsync([.. cli, "create", "src", snap + "-diff", "--diff", "--resume"]);
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(json))
            Assert.Equal(snap, doc.RootElement.GetProperty("base_dir").GetString());
        // ... and restores (jailed, the worker reads the diff and its base through read-only bind mounts).
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. cli, "restore", snap + "-diff", "--id", "diffclone"]);
        Assert.True(code == 0, err);
        Assert.Equal(VmState.Running, (await d.Client.GetVmAsync(new GetVmRequest { Id = "diffclone" })).State);
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "diffclone", Dir = snap + "-diffclone" });
        Assert.True(Counter(snap + "-diffclone") >= atSnapshot);

        foreach (var id in (string[])["clone", "src", "diffclone"]) await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
        Assert.False(ProcInfo.IsAlive(clone.WorkerPid));
        d.AssertNothingLeft();
    }

    private static ulong Counter(string snapshotDir)
    {
        using var f = File.OpenRead(Path.Combine(snapshotDir, "memory"));
        f.Position = 0x200000; // counter.S's counter, in the memory file's first region
        Span<byte> b = stackalloc byte[8];
        f.ReadExactly(b);
        return BitConverter.ToUInt64(b);
    }
}
