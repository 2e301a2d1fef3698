using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// Malformed requests, table-driven: each gets a typed status naming the field, and nothing is left
/// half-created (no VM, no directory, no worker).
/// </summary>
[Collection("kvm")]
public sealed class BadRequestTests(ITestOutputHelper output)
{
    private static string Hello => TestPaths.Guest("hello");

    /// <summary>A 1 MiB raw image (whole sectors) shared by the drive cases.</summary>
    private static readonly Lazy<string> s_image = new(() =>
    {
        string path = Path.Combine(Path.GetTempPath(), "firesharp-api-test-drive.img");
        using (var f = File.Create(path)) f.SetLength(1 << 20);
        return path;
    });

    private static string Image => s_image.Value;

    private static CreateVmRequest Good(string id = "ok") => new() { Id = id, Spec = ApiTestServer.Spec("hello") };

    private static CreateVmRequest With(Action<CreateVmRequest> change)
    {
        var r = Good();
        change(r);
        return r;
    }

    private static DriveSpec Drive(string id = "d", string? path = null, bool root = false) => new() { Id = id, Path = path ?? Hello, Root = root };

    private static NetworkInterfaceSpec Nic(string id = "eth0", string? tap = "tap0") => tap is null ? new() { Id = id } : new() { Id = id, Tap = tap };

    /// <summary>(name, request, expected status, field).</summary>
    public static IEnumerable<(string Name, CreateVmRequest Request, StatusCode Code, string Field)> CreateCases()
    {
        var inv = StatusCode.InvalidArgument;
        // id
        yield return ("empty id", With(r => r.Id = ""), inv, "id");
        yield return ("id too long", With(r => r.Id = new string('a', 64)), inv, "id");
        yield return ("uppercase id", With(r => r.Id = "Vm1"), inv, "id");
        yield return ("id starting with a dash", With(r => r.Id = "-vm"), inv, "id");
        yield return ("id starting with a dot", With(r => r.Id = ".."), inv, "id");
        yield return ("id with a slash", With(r => r.Id = "a/b"), inv, "id");
        yield return ("id with a space", With(r => r.Id = "a b"), inv, "id");
        yield return ("id with unicode", With(r => r.Id = "vmé"), inv, "id");
        yield return ("id with a NUL", With(r => r.Id = "a\0b"), inv, "id");
        // labels
        yield return ("empty label key", With(r => r.Labels[""] = "x"), inv, "labels[\"\"]");
        yield return ("label key too long", With(r => r.Labels[new string('k', 64)] = "x"), inv, $"labels[\"{new string('k', 64)}\"]");
        yield return ("label key with a space", With(r => r.Labels["a b"] = "x"), inv, "labels[\"a b\"]");
        yield return ("label key starting with a dash", With(r => r.Labels["-a"] = "x"), inv, "labels[\"-a\"]");
        yield return ("label value too long", With(r => r.Labels["k"] = new string('v', 254)), inv, "labels[\"k\"]");
        yield return ("label value with a newline", With(r => r.Labels["k"] = "a\nb"), inv, "labels[\"k\"]");
        yield return ("too many labels", With(r => { for (int i = 0; i < 65; i++) r.Labels[$"k{i}"] = "v"; }), inv, "labels");
        // spec, kernel
        yield return ("missing spec", With(r => r.Spec = null), inv, "spec");
        yield return ("missing kernel", With(r => r.Spec.Kernel = null), inv, "spec.kernel");
        yield return ("empty kernel path", With(r => r.Spec.Kernel.Path = ""), inv, "spec.kernel.path");
        yield return ("relative kernel path", With(r => r.Spec.Kernel.Path = "build/guests/hello.elf"), inv, "spec.kernel.path");
        yield return ("kernel path with ..", With(r => r.Spec.Kernel.Path = "../hello.elf"), inv, "spec.kernel.path");
        yield return ("missing kernel file", With(r => r.Spec.Kernel.Path = "/nonexistent/vmlinux"), inv, "spec.kernel.path");
        yield return ("kernel is a directory", With(r => r.Spec.Kernel.Path = "/tmp"), inv, "spec.kernel.path");
        yield return ("kernel path with a NUL", With(r => r.Spec.Kernel.Path = "/tmp/a\0b"), inv, "spec.kernel.path");
        yield return ("kernel is not an ELF or bzImage", With(r => r.Spec.Kernel.Path = "/etc/hostname"), inv, "spec.kernel.path");
        yield return ("relative initrd path", With(r => r.Spec.Kernel.InitrdPath = "initrd.cpio"), inv, "spec.kernel.initrd_path");
        yield return ("missing initrd file", With(r => r.Spec.Kernel.InitrdPath = "/nonexistent/initrd"), inv, "spec.kernel.initrd_path");
        yield return ("over-long command line", With(r => r.Spec.Kernel.Cmdline = new string('a', 2048)), inv, "spec.kernel.cmdline");
        yield return ("command line with a newline", With(r => r.Spec.Kernel.Cmdline = "console=ttyS0\ninit=/bin/sh"), inv, "spec.kernel.cmdline");
        yield return ("command line with a tab", With(r => r.Spec.Kernel.Cmdline = "a\tb"), inv, "spec.kernel.cmdline");
        yield return ("command line with non-ASCII", With(r => r.Spec.Kernel.Cmdline = "root=/dev/vdä"), inv, "spec.kernel.cmdline");
        // machine
        yield return ("missing machine", With(r => r.Spec.Machine = null), inv, "spec.machine");
        yield return ("zero vcpus", With(r => r.Spec.Machine.Vcpus = 0), inv, "spec.machine.vcpus");
        yield return ("negative vcpus", With(r => r.Spec.Machine.Vcpus = -2), inv, "spec.machine.vcpus");
        yield return ("vcpus above the xAPIC limit", With(r => r.Spec.Machine.Vcpus = 255), inv, "spec.machine.vcpus");
        yield return ("int.MaxValue vcpus", With(r => r.Spec.Machine.Vcpus = int.MaxValue), inv, "spec.machine.vcpus");
        yield return ("zero memory", With(r => r.Spec.Machine.MemMib = 0), inv, "spec.machine.mem_mib");
        yield return ("negative memory", With(r => r.Spec.Machine.MemMib = -128), inv, "spec.machine.mem_mib");
        yield return ("memory above 1 TiB", With(r => r.Spec.Machine.MemMib = 1024L * 1024 + 1), inv, "spec.machine.mem_mib");
        yield return ("long.MaxValue memory", With(r => r.Spec.Machine.MemMib = long.MaxValue), inv, "spec.machine.mem_mib");
        yield return ("memory above the host's", With(r => r.Spec.Machine.MemMib = 1000L * 1024), StatusCode.ResourceExhausted, "spec.machine.mem_mib");
        yield return ("memory too small for the kernel", With(r => r.Spec.Machine.MemMib = 1), inv, "spec.machine.mem_mib");
        // drives
        yield return ("drive without id", With(r => r.Spec.Drives.Add(Drive(id: ""))), inv, "spec.drives[0].id");
        yield return ("drive id with a slash", With(r => r.Spec.Drives.Add(Drive(id: "a/b"))), inv, "spec.drives[0].id");
        yield return ("drive id too long", With(r => r.Spec.Drives.Add(Drive(id: new string('d', 33)))), inv, "spec.drives[0].id");
        yield return ("duplicate drive ids", With(r => { r.Spec.Drives.Add(Drive("d")); r.Spec.Drives.Add(Drive("d")); }), inv, "spec.drives[1].id");
        yield return ("drive without path", With(r => r.Spec.Drives.Add(new DriveSpec { Id = "d" })), inv, "spec.drives[0].path");
        yield return ("relative drive path", With(r => r.Spec.Drives.Add(Drive(path: "rootfs.ext4"))), inv, "spec.drives[0].path");
        yield return ("missing drive file", With(r => r.Spec.Drives.Add(Drive(path: "/nonexistent/rootfs.ext4"))), inv, "spec.drives[0].path");
        yield return ("two root drives", With(r => { r.Spec.Drives.Add(Drive("a", root: true)); r.Spec.Drives.Add(Drive("b", root: true)); }), inv, "spec.drives[1].root");
        yield return ("drive image that is not whole sectors", With(r => r.Spec.Drives.Add(Drive(path: "/etc/hostname"))), inv, "spec.drives[0].path");
        yield return ("one image as two drives", With(r => { r.Spec.Drives.Add(Drive("a", Image)); r.Spec.Drives.Add(Drive("b", Image)); }), inv, "spec.drives[1].path");
        // network interfaces
        yield return ("interface without id", With(r => r.Spec.NetworkInterfaces.Add(Nic(id: ""))), inv, "spec.network_interfaces[0].id");
        yield return ("duplicate interface ids", With(r => { r.Spec.NetworkInterfaces.Add(Nic("e", "tap0")); r.Spec.NetworkInterfaces.Add(Nic("e", "tap1")); }), inv, "spec.network_interfaces[1].id");
        yield return ("interface without tap or auto", With(r => r.Spec.NetworkInterfaces.Add(Nic(tap: null))), inv, "spec.network_interfaces[0].host");
        yield return ("auto set to false", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Auto = false })), inv, "spec.network_interfaces[0].auto");
        yield return ("tap name too long", With(r => r.Spec.NetworkInterfaces.Add(Nic(tap: "tap-name-too-long"))), inv, "spec.network_interfaces[0].tap");
        yield return ("tap name with a slash", With(r => r.Spec.NetworkInterfaces.Add(Nic(tap: "tap/0"))), inv, "spec.network_interfaces[0].tap");
        yield return ("empty tap name", With(r => r.Spec.NetworkInterfaces.Add(Nic(tap: ""))), inv, "spec.network_interfaces[0].tap");
        yield return ("two interfaces on one tap", With(r => { r.Spec.NetworkInterfaces.Add(Nic("a", "tap0")); r.Spec.NetworkInterfaces.Add(Nic("b", "tap0")); }), inv, "spec.network_interfaces[1].tap");
        yield return ("invalid MAC", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Mac = "not-a-mac" })), inv, "spec.network_interfaces[0].mac");
        yield return ("MAC with five octets", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Mac = "02:00:00:00:01" })), inv, "spec.network_interfaces[0].mac");
        yield return ("multicast MAC", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Mac = "01:00:5e:00:00:01" })), inv, "spec.network_interfaces[0].mac");
        yield return ("all-zero MAC", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Mac = "00:00:00:00:00:00" })), inv, "spec.network_interfaces[0].mac");
        yield return ("IP without prefix", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Ip = "10.0.0.2" })), inv, "spec.network_interfaces[0].ip");
        yield return ("IP with prefix 33", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Ip = "10.0.0.2/33" })), inv, "spec.network_interfaces[0].ip");
        yield return ("IPv6 address", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Ip = "fd00::2/64" })), inv, "spec.network_interfaces[0].ip");
        yield return ("IP that is a name", With(r => r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "e", Tap = "tap0", Ip = "host/24" })), inv, "spec.network_interfaces[0].ip");
        // vsock
        yield return ("reserved vsock CID 2", With(r => r.Spec.Vsock = new VsockSpec { GuestCid = 2 }), inv, "spec.vsock.guest_cid");
        yield return ("vsock CID 0", With(r => r.Spec.Vsock = new VsockSpec { GuestCid = 0 }), inv, "spec.vsock.guest_cid");
        yield return ("vsock CID -1", With(r => r.Spec.Vsock = new VsockSpec { GuestCid = uint.MaxValue }), inv, "spec.vsock.guest_cid");
        yield return ("two interfaces with an ip", With(r =>
        {
            r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "a", Tap = "tap0", Ip = "10.0.0.2/24" });
            r.Spec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "b", Tap = "tap1", Ip = "10.0.1.2/24" });
        }), inv, "spec.network_interfaces");
        yield return ("the agent with a command line too long for its settings", With(r => { r.Spec.Agent = true; r.Spec.Kernel.Cmdline = new string('a', FireSharp.Daemon.SpecValidator.MaxCmdlineLength - 4); }), inv, "spec.kernel.cmdline");
    }

    [SkippableFact]
    public async Task Each_malformed_create_gets_a_typed_status_naming_the_field_and_leaves_nothing()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var cases = CreateCases().ToList();
        Assert.True(cases.Count > 50, $"only {cases.Count} cases");
        var failures = new List<string>();
        foreach (var (name, request, code, field) in cases)
        {
            try
            {
                await RpcAssert.FailsAsync(code, () => s.Client.CreateVmAsync(request).ResponseAsync, field);
            }
            catch (Exception e) when (e is Xunit.Sdk.XunitException)
            {
                failures.Add($"{name}: {e.Message}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        // Nothing half-created: no VM, no directory, no worker left.
        Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
        // And the daemon still works.
        Assert.Equal(VmState.Created, (await s.Client.CreateVmAsync(Good())).State);
    }

    [SkippableFact]
    public async Task Malformed_requests_to_the_other_calls_name_their_field()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        await c.CreateVmAsync(Good("vm"));
        var cases = new (string Name, Func<Task> Call, string Field)[]
        {
            ("start empty id", () => c.StartVmAsync(new StartVmRequest()).ResponseAsync, "id"),
            ("pause bad id", () => c.PauseVmAsync(new PauseVmRequest { Id = "A" }).ResponseAsync, "id"),
            ("resume bad id", () => c.ResumeVmAsync(new ResumeVmRequest { Id = "a b" }).ResponseAsync, "id"),
            ("stop negative grace", () => c.StopVmAsync(new StopVmRequest { Id = "vm", GracePeriodSeconds = -1 }).ResponseAsync, "grace_period_seconds"),
            ("stop grace over an hour", () => c.StopVmAsync(new StopVmRequest { Id = "vm", GracePeriodSeconds = 3601 }).ResponseAsync, "grace_period_seconds"),
            ("delete empty id", () => c.DeleteVmAsync(new DeleteVmRequest()).ResponseAsync, "id"),
            ("get overlong id", () => c.GetVmAsync(new GetVmRequest { Id = new string('a', 100) }).ResponseAsync, "id"),
            ("list unspecified state", () => c.ListVmsAsync(new ListVmsRequest { States = { VmState.Unspecified } }).ResponseAsync, "states[0]"),
            ("list unknown enum value", () => c.ListVmsAsync(new ListVmsRequest { States = { VmState.Running, (VmState)99 } }).ResponseAsync, "states[1]"),
            ("list bad selector key", () => c.ListVmsAsync(new ListVmsRequest { LabelSelector = { ["a b"] = "x" } }).ResponseAsync, "label_selector[\"a b\"]"),
            ("exec negative timeout", () => c.ExecAsync(new ExecRequest { Id = "vm", Argv = { "ls" }, TimeoutSeconds = -5 }).ResponseAsync, "timeout_seconds"),
            ("exec empty program", () => c.ExecAsync(new ExecRequest { Id = "vm", Argv = { "" } }).ResponseAsync, "argv"),
            ("watch bad id", async () => { using var w = c.WatchEvents(new WatchEventsRequest { Id = "UPPER" }); await w.ResponseStream.MoveNext(); }, "id"),
            ("console without id", async () =>
            {
                using var con = c.StreamConsole();
                await con.RequestStream.WriteAsync(new ConsoleRequest { Replay = true });
                await con.ResponseStream.MoveNext();
            }, "id"),
            ("console with no message at all", async () =>
            {
                using var con = c.StreamConsole();
                await con.RequestStream.CompleteAsync();
                await con.ResponseStream.MoveNext();
            }, "id"),
        };
        foreach (var (name, call, field) in cases)
        {
            var e = await Assert.ThrowsAsync<RpcException>(call);
            Assert.True(e.StatusCode == StatusCode.InvalidArgument, $"{name}: {e.StatusCode} {e.Status.Detail}");
            Assert.True(field == e.Trailers.GetValue(FireSharp.Daemon.ErrorInterceptor.FieldTrailer), $"{name}: field {e.Trailers.GetValue(FireSharp.Daemon.ErrorInterceptor.FieldTrailer)}");
            Assert.StartsWith(field + ":", e.Status.Detail, StringComparison.Ordinal);
        }
        // The VM is untouched by all of that.
        Assert.Equal(VmState.Created, (await c.GetVmAsync(new GetVmRequest { Id = "vm" })).State);
    }
}
