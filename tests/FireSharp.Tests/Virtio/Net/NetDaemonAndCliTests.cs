using FireSharp.Cli;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>--net on <c>firesharp run</c> (bad input is exit code 2), and network interfaces through the daemon.</summary>
[Collection("kvm")]
public sealed class NetDaemonAndCliTests(ITestOutputHelper output)
{
    private static bool TunUsable()
    {
        try
        {
            using var tap = TapBackend.Open(null);
            return true;
        }
        catch (NetConfigException) { return false; }
    }

    // Any existing file passes the kernel check that comes before the taps are opened.
    private static string SomeFile => typeof(NetDaemonAndCliTests).Assembly.Location;

    [Theory]
    [InlineData("tap0,zz:zz")]
    [InlineData("auto,01:02:03:04:05:06")]
    [InlineData("a-name-too-long-for-linux")]
    [InlineData("auto,ip=10.0.0.300/24")]
    [InlineData("auto,gw=10.0.0.1")]
    public void Bad_net_arguments_exit_with_2(string net)
    {
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            Assert.Equal(RunCommand.ExitBadInput, CliApp.Run(["run", "--kernel", SomeFile, "--net", net]));
        }
        finally
        {
            Console.SetError(saved);
        }
        Assert.Contains("--net", err.ToString());
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("tap0,02:00:00:00:00:01")]
    public void On_restore_net_takes_only_tap_names(string net)
    {
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            Assert.Equal(RunCommand.ExitBadInput, CliApp.Run(["run", "--insecure-unauthenticated", "--restore", "/nonexistent-snapshot", "--net", net]));
        }
        finally
        {
            Console.SetError(saved);
        }
        Assert.Contains("only a tap name", err.ToString());
    }

    [SkippableFact]
    public void A_busy_tap_exits_with_2_before_any_vm_exists()
    {
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        using var held = TapBackend.Open(null);
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            Assert.Equal(RunCommand.ExitBadInput, CliApp.Run(["run", "--kernel", SomeFile, "--net", held.Name]));
        }
        finally
        {
            Console.SetError(saved);
        }
        Assert.Contains("in use", err.ToString());
    }

    [SkippableFact]
    public async Task The_daemon_gives_a_vm_its_tap_and_removes_it_with_the_vm()
    {
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        await using var s = await ApiTestServer.StartAsync(output);
        string tap = "fsdt" + Environment.ProcessId % 100000;
        var spec = ApiTestServer.Spec("hello");
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Tap = tap, Mac = "02:00:00:00:00:07", Ip = "10.0.0.2/24" });
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "n1", Spec = spec });
        Assert.True(Directory.Exists("/sys/class/net/" + tap), "the worker did not create the VM's tap");
        Assert.True(File.Exists($"/sys/class/net/{tap}/tun_flags"), "not a tun/tap device");

        // A second VM on the same tap: the tap is busy, a clear InvalidArgument naming the interface.
        var again = ApiTestServer.Spec("hello");
        again.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Tap = tap });
        var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => s.Client.CreateVmAsync(new CreateVmRequest { Id = "n2", Spec = again }).ResponseAsync,
            "spec.network_interfaces[0]");
        Assert.Contains("in use", e.Status.Detail);

        // auto: a tap the worker creates.
        var auto = ApiTestServer.Spec("hello");
        auto.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Auto = true });
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "n1" });
        Assert.False(Directory.Exists("/sys/class/net/" + tap), "the tap outlived its VM");
        int before = Directory.GetDirectories("/sys/class/net", "fstap*").Length;
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "n3", Spec = auto });
        Assert.Equal(before + 1, Directory.GetDirectories("/sys/class/net", "fstap*").Length);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "n3" });
    }
}
