using FireSharp.Devices.Virtio.Net;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>Opening taps: name checks without the kernel, and real taps when /dev/net/tun is usable (root).</summary>
public class TapBackendTests
{
    private static bool TunUsable()
    {
        if (!File.Exists(TapBackend.TunPath)) return false;
        try
        {
            using var tap = TapBackend.Open(null);
            return true;
        }
        catch (NetConfigException) { return false; }
    }

    [Theory]
    [InlineData("")]
    [InlineData("a-name-too-long-for-linux")]
    [InlineData("tap/0")]
    [InlineData("tap 0")]
    [InlineData("tap%d")]
    [InlineData("..")]
    public void Bad_tap_names_are_refused_before_the_kernel_is_asked(string name)
    {
        var e = Assert.Throws<NetConfigException>(() => TapBackend.Open(name, "--net"));
        Assert.Equal(NetConfigError.InvalidTapName, e.Reason);
        Assert.StartsWith("--net: ", e.Message);
    }

    [Theory]
    [InlineData("01:00:00:00:00:01", "multicast")]
    [InlineData("00:00:00:00:00:00", "00:00")]
    [InlineData("02:00:00:00:00", "not a MAC")]
    [InlineData("02:00:00:00:00:zz", "not a MAC")]
    public void Bad_macs_are_refused(string mac, string words)
    {
        var e = Assert.Throws<NetConfigException>(() => NetworkInterfaceSpec.Parse($"auto,{mac}", "net0"));
        Assert.Equal(NetConfigError.InvalidMac, e.Reason);
        Assert.Contains(words, e.Message);
    }

    [Fact]
    public void Net_argument_parses_tap_mac_and_ip()
    {
        var n = NetworkInterfaceSpec.Parse("tap7,02:aa:bb:cc:dd:ee,ip=172.16.0.2/24,gw=172.16.0.1", "net0");
        Assert.Equal("tap7", n.TapName);
        Assert.Equal("02:aa:bb:cc:dd:ee", n.Mac);
        Assert.Equal("ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off", n.Ipv4!.KernelParameter("eth0"));
        var auto = NetworkInterfaceSpec.Parse("auto", "net1");
        Assert.Null(auto.TapName);
        Assert.Equal(NetworkInterfaceSpec.DeriveMac("net1/fstap3"), auto.EffectiveMac("fstap3"));
        Assert.Equal(0x02, auto.EffectiveMac("fstap3")[0] & 0x03); // locally administered, unicast
        Assert.Throws<NetConfigException>(() => NetworkInterfaceSpec.Validate([n, n with { Id = "net1" }]));
    }

    [SkippableFact]
    public void An_automatic_tap_is_created_with_offloads_and_vanishes_on_dispose()
    {
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        string name;
        using (var tap = TapBackend.Open(null))
        {
            name = tap.Name;
            Assert.StartsWith("fstap", name);
            Assert.True(tap.Created);
            Assert.True(Directory.Exists("/sys/class/net/" + name));
            Assert.Equal(NetOffloads.All, tap.SupportedOffloads);
            tap.SetReceiveOffloads(NetOffloads.All);
            Assert.Equal(0, tap.Read(new byte[NetProtocol.MaxFrameSize])); // non-blocking, nothing there
            // A tap that is down refuses frames (EIO); up, it takes them.
            Assert.Equal(NetWriteResult.Rejected, tap.Write(NetRigFrameForTap()));
            using (var ip = System.Diagnostics.Process.Start("ip", $"link set dev {name} up")) ip.WaitForExit();
            Assert.Equal(NetWriteResult.Sent, tap.Write(NetRigFrameForTap()));
        }
        Assert.False(Directory.Exists("/sys/class/net/" + name), $"{name} outlived its descriptor");
    }

    [SkippableFact]
    public void A_tap_in_use_is_busy()
    {
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        using var first = TapBackend.Open(null);
        var e = Assert.Throws<NetConfigException>(() => TapBackend.Open(first.Name, "net[0]"));
        Assert.Equal(NetConfigError.TapBusy, e.Reason);
        Assert.Contains(first.Name, e.Message);
    }

    [SkippableFact]
    public void A_named_tap_that_does_not_exist_is_created_and_removed()
    {
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        string name = "fsnt" + Environment.ProcessId % 100000;
        using (var tap = TapBackend.Open(name))
        {
            Assert.Equal(name, tap.Name);
            Assert.True(tap.Created);
        }
        Assert.False(Directory.Exists("/sys/class/net/" + name));
    }

    /// <summary>A minimal Ethernet frame with an all-zero header (no offloads).</summary>
    private static byte[] NetRigFrameForTap()
    {
        var f = new byte[NetProtocol.HeaderSize + 60];
        for (int i = 0; i < 6; i++) f[NetProtocol.HeaderSize + i] = 0xff; // broadcast
        f[NetProtocol.HeaderSize + 6] = 0x02;
        f[NetProtocol.HeaderSize + 12] = 0x08; // IPv4 ethertype (contents irrelevant to the tap)
        return f;
    }
}
