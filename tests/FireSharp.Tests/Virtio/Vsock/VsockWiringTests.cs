using System.Net.Sockets;
using FireSharp.Cli;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Virtio.Vsock;

/// <summary><c>firesharp run --vsock</c> input checks (exit code 2 before any VM exists).</summary>
public class VsockCliTests
{
    private static int Run(params string[] args) =>
        CliApp.Run(["run", "--kernel", TestPaths.Guest("hello"), "--serial", Path.Combine(TestPaths.TempDir(), "console.txt"), .. args]);

    [Fact]
    public void A_reserved_cid_is_bad_input() =>
        Assert.Equal(2, Run("--vsock", Path.Combine(TestPaths.TempDir(), "v.sock"), "--vsock-cid", "2"));

    [Fact]
    public void An_existing_socket_path_is_bad_input()
    {
        string path = Path.Combine(TestPaths.TempDir(), "taken.sock");
        File.WriteAllText(path, "");
        Assert.Equal(2, Run("--vsock", path));
        Assert.True(File.Exists(path), "an existing path is never removed");
    }

    [Fact]
    public void A_too_long_socket_path_is_bad_input() =>
        Assert.Equal(2, Run("--vsock", "/tmp/" + new string('v', 120)));

    [Fact]
    public void A_cid_without_a_path_is_bad_input() => Assert.Equal(2, Run("--vsock-cid", "5"));
}

/// <summary>A VM built with <see cref="VmSpec.Vsock"/> gets the device in the slot after its drives and the socket on the host.</summary>
[Collection("kvm")]
public class VsockMicroVmTests
{
    [SkippableFact]
    public void A_vm_with_vsock_owns_its_socket_for_its_lifetime()
    {
        KvmTestSupport.RequireKvm();
        string path = Path.Combine(TestPaths.TempDir(), "vm.sock");
        var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("hello"), MemoryMib = 16, Vsock = new VsockDeviceSpec(7, path) });
        using (vm)
        {
            var vsock = Assert.Single(vm.Devices.OfType<VirtioVsock>());
            var placed = vm.Devices.PlacementOf(vsock);
            Assert.Equal(0, placed.Slot); // no drives: the first virtio-mmio slot
            Assert.Same(vsock, vsock.Transport?.Device);
            Assert.Same(placed.Transport, vsock.Transport);
            using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            client.Connect(new UnixDomainSocketEndPoint(path)); // the event loop's listener is live
        }
        Assert.False(File.Exists(path), "the socket is removed with the VM");
    }
}
