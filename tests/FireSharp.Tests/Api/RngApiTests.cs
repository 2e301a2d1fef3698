using FireSharp.Devices.Virtio.Rng;
using FireSharp.Proto.V1;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>VmSpec.rng through the daemon (in-process workers) and a snapshot.</summary>
[Collection("kvm")]
public sealed class RngApiTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Spec_rng_creates_the_device_and_a_restored_vm_reports_it()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        var spec = ApiTestServer.Spec("counter");
        spec.Rng = true;
        var vm = await c.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = spec, Start = true });
        Assert.True(vm.Spec.Rng);
        await s.ReadConsoleUntilAsync("src", "COUNTING");
        string snap = Path.Combine(s.Options.StateDir, "snap");
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = snap });
        Assert.Contains(FireSharp.Snapshot.SnapshotReader.Load(snap).State.Config.Devices, d => d.Kind == RngDeviceKind.Name);

        var clone = await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "clone" });
        Assert.True(clone.Spec.Rng, "the restored VM's spec does not show the snapshot's entropy device");
        Assert.Equal(VmState.Running, clone.State);

        // Without it, a VM has none, and neither has its restored clone.
        var plain = await c.CreateVmAsync(new CreateVmRequest { Id = "plain", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.False(plain.Spec.Rng);
        await s.ReadConsoleUntilAsync("plain", "COUNTING");
        string snap2 = Path.Combine(s.Options.StateDir, "snap2");
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "plain", Dir = snap2 });
        Assert.False((await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap2, Id = "plain-clone" })).Spec.Rng);

        foreach (var id in new[] { "src", "clone", "plain", "plain-clone" })
            await c.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
    }
}
