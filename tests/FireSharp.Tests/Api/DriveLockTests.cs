using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>Image locks through the daemon (issue 18): one writer or many readers per image, held until the VM is deleted.</summary>
[Collection("kvm")]
public sealed class DriveLockTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fs-drivelocks-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Image(string name)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, new byte[1 << 20]);
        return path;
    }

    private static CreateVmRequest Vm(string id, string image, bool readOnly)
    {
        var spec = ApiTestServer.Spec("counter");
        spec.Drives.Add(new DriveSpec { Id = "data", Path = image, ReadOnly = readOnly });
        return new CreateVmRequest { Id = id, Spec = spec, Start = true };
    }

    [SkippableFact]
    public async Task A_second_writer_is_refused_naming_the_drive_and_the_holder_until_the_first_vm_is_deleted()
    {
        string rw = Image("rw.img");
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        Assert.Equal(VmState.Running, (await c.CreateVmAsync(Vm("first", rw, readOnly: false))).State);

        var e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(Vm("second", rw, readOnly: false)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal("spec.drives[0].path", e.Trailers.GetValue(FireSharp.Daemon.ErrorInterceptor.FieldTrailer));
        Assert.Contains("VM 'first'", e.Status.Detail);
        Assert.Contains(rw, e.Status.Detail);
        // A reader beside the writer is refused too.
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(Vm("reader", rw, readOnly: true)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);

        // The lock is an OFD lock: another open of the image (another process, another daemon) cannot take one either.
        using (var other = File.OpenHandle(rw, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            Assert.False(PathOpen.TryLock(other, exclusive: false), "the daemon holds no OFD lock on the read-write image");

        // Across a stop and a restart in a new worker the VM keeps its image.
        await c.StopVmAsync(new StopVmRequest { Id = "first", Force = true });
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(Vm("second", rw, readOnly: false)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal(VmState.Running, (await c.StartVmAsync(new StartVmRequest { Id = "first" })).State);

        await c.StopVmAsync(new StopVmRequest { Id = "first", Force = true });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "first" });
        Assert.Equal(VmState.Running, (await c.CreateVmAsync(Vm("second", rw, readOnly: false))).State);
        Assert.Equal(["second"], (await c.ListVmsAsync(new ListVmsRequest())).Vms.Select(v => v.Id));
    }

    [SkippableFact]
    public async Task Readers_of_one_read_only_image_share_it_and_a_writer_is_refused_beside_them()
    {
        string ro = Image("ro.img");
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        Assert.Equal(VmState.Running, (await c.CreateVmAsync(Vm("r1", ro, readOnly: true))).State);
        Assert.Equal(VmState.Running, (await c.CreateVmAsync(Vm("r2", ro, readOnly: true))).State);
        var e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(Vm("w", ro, readOnly: false)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Contains("read-only", e.Status.Detail);
        using (var other = File.OpenHandle(ro, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            Assert.False(PathOpen.TryLock(other, exclusive: true), "a writer's lock was granted beside the readers'");
            Assert.True(PathOpen.TryLock(other, exclusive: false), "a reader's lock was refused beside the readers'");
        }
        Assert.Equal(2, (await c.ListVmsAsync(new ListVmsRequest())).Vms.Count);
    }
}
