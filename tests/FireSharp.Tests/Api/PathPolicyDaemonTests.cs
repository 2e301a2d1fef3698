using FireSharp.Daemon;
using FireSharp.Proto.V1;
using FireSharp.Tests.Kvm;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// The path policy through the daemon (issue 18): with AllowedPathRoots narrowed to one directory, a drive outside
/// it, /dev/null, a FIFO and a symlink leading out are refused naming the field; so are a snapshot directory
/// outside the roots and a vsock path outside the state directory. In-process daemon (unjailed), and the real
/// daemon + jailed worker, where the jailer opens the drive through the same policy.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class PathPolicyDaemonTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fs-pathroots-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Root => Path.Combine(_dir, "images");

    /// <summary>A root holding the counter guest (a copy: the repository is not a root) and a 1 MiB image; an outside image; a FIFO and an escaping symlink inside.</summary>
    private (VmSpec Spec, string Outside) Prepare()
    {
        Directory.CreateDirectory(Root);
        string outsideDir = Path.Combine(_dir, "elsewhere");
        Directory.CreateDirectory(outsideDir);
        File.Copy(TestPaths.Guest("counter"), Path.Combine(Root, "counter.elf"));
        File.WriteAllBytes(Path.Combine(Root, "disk.img"), new byte[1 << 20]);
        string outside = Path.Combine(outsideDir, "secret.img");
        File.WriteAllBytes(outside, new byte[1 << 20]);
        PathPolicyTests.MakeFifo(Path.Combine(Root, "fifo"));
        File.CreateSymbolicLink(Path.Combine(Root, "escape.img"), outside);
        var spec = ApiTestServer.Spec("counter");
        spec.Kernel.Path = Path.Combine(Root, "counter.elf");
        return (spec, outside);
    }

    private static VmSpec WithDrive(VmSpec spec, string path)
    {
        var s = spec.Clone();
        s.Drives.Add(new DriveSpec { Id = "data", Path = path });
        return s;
    }

    private static void AssertRefused(RpcException e, string field, params StatusCode[] codes)
    {
        Assert.Contains(e.StatusCode, codes);
        Assert.Equal(field, e.Trailers.GetValue(ErrorInterceptor.FieldTrailer));
        Assert.Contains(field, e.Status.Detail);
    }

    [SkippableFact]
    public async Task Paths_outside_the_roots_devices_fifos_and_escaping_symlinks_are_refused_and_a_drive_inside_works()
    {
        var (spec, outside) = Prepare();
        await using var s = await ApiTestServer.StartAsync(output, o => o with { AllowedPathRoots = [Root] });
        var c = s.Client;

        var e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(new CreateVmRequest { Id = "out", Spec = WithDrive(spec, outside) }).ResponseAsync);
        AssertRefused(e, "spec.drives[0].path", StatusCode.PermissionDenied);
        Assert.Contains("outside the allowed roots", e.Status.Detail);
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(new CreateVmRequest { Id = "null", Spec = WithDrive(spec, "/dev/null") }).ResponseAsync);
        AssertRefused(e, "spec.drives[0].path", StatusCode.PermissionDenied, StatusCode.InvalidArgument);
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(new CreateVmRequest { Id = "fifo", Spec = WithDrive(spec, Path.Combine(Root, "fifo")) }).ResponseAsync);
        AssertRefused(e, "spec.drives[0].path", StatusCode.InvalidArgument);
        Assert.Contains("FIFO", e.Status.Detail);
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(new CreateVmRequest { Id = "esc", Spec = WithDrive(spec, Path.Combine(Root, "escape.img")) }).ResponseAsync);
        AssertRefused(e, "spec.drives[0].path", StatusCode.InvalidArgument);
        var outsideKernel = spec.Clone();
        outsideKernel.Kernel.Path = TestPaths.Guest("counter");
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateVmAsync(new CreateVmRequest { Id = "kern", Spec = outsideKernel }).ResponseAsync);
        AssertRefused(e, "spec.kernel.path", StatusCode.PermissionDenied);

        // Snapshot directory outside the roots, vsock path outside the state directory: refused before anything else.
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "any", Dir = Path.Combine(_dir, "elsewhere", "snap") }).ResponseAsync);
        AssertRefused(e, "dir", StatusCode.PermissionDenied);
        e = await Assert.ThrowsAsync<RpcException>(() => c.RestoreVmAsync(new RestoreVmRequest
        {
            Id = "r", Dir = Path.Combine(Root, "snap"), Overrides = new RestoreOverrides { VsockPath = "/root/evil.sock" },
        }).ResponseAsync);
        AssertRefused(e, "overrides.vsock_path", StatusCode.PermissionDenied);
        Assert.False(File.Exists("/root/evil.sock"));

        // Inside the root it works, and nothing refused above was left behind.
        var vm = await c.CreateVmAsync(new CreateVmRequest { Id = "ok", Spec = WithDrive(spec, Path.Combine(Root, "disk.img")), Start = true });
        Assert.Equal(VmState.Running, vm.State);
        Assert.Equal(["ok"], (await c.ListVmsAsync(new ListVmsRequest())).Vms.Select(v => v.Id));

        // A snapshot directory whose parent is a symlink out of the root is refused, and nothing is written outside;
        // one inside is written through the parent's fd (SnapshotPlacementTests swap the parent after the check).
        Directory.CreateSymbolicLink(Path.Combine(Root, "out"), Path.Combine(_dir, "elsewhere"));
        e = await Assert.ThrowsAsync<RpcException>(() => c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "ok", Dir = Path.Combine(Root, "out", "snap"), Resume = true }).ResponseAsync);
        AssertRefused(e, "dir", StatusCode.InvalidArgument);
        Assert.False(Directory.Exists(Path.Combine(_dir, "elsewhere", "snap")));
        var snap = await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "ok", Dir = Path.Combine(Root, "snap"), Resume = true });
        Assert.Equal(Path.Combine(Root, "snap"), snap.Dir);
        Assert.True(File.Exists(Path.Combine(Root, "snap", "vmstate.mac")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(Root, "snap")));
    }

    [SkippableFact]
    public async Task The_jailer_opens_drives_through_the_same_policy()
    {
        var (spec, _) = Prepare();
        await using var d = await DaemonUnderTest.StartAsync(output, [$"--AllowedPathRoots={Root}"]);
        var e = await Assert.ThrowsAsync<RpcException>(() => d.Client.CreateVmAsync(new CreateVmRequest { Id = "esc", Spec = WithDrive(spec, Path.Combine(Root, "escape.img")) }).ResponseAsync);
        AssertRefused(e, "spec.drives[0].path", StatusCode.InvalidArgument);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "jailed", Spec = WithDrive(spec, Path.Combine(Root, "disk.img")), Start = true });
        Assert.Equal(VmState.Running, vm.State);
        Assert.NotEqual(0, vm.WorkerPid);
    }
}
