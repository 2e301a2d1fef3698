using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Proto.V1;

namespace FireSharp.Tests.Api;

/// <summary>firesharp.v1 maps to the daemon's domain types and back without loss; what the domain cannot express is refused with its field.</summary>
public sealed class VmApiMappingTests
{
    internal static VmSpec FullSpec() => new()
    {
        Kernel = new KernelSpec { Path = "/k", InitrdPath = "/i", Cmdline = "console=ttyS0", PreferPvh = true },
        Machine = new MachineSpec { Vcpus = 2, MemMib = 256 },
        Drives = { new DriveSpec { Id = "root", Path = "/r", ReadOnly = true, Root = true }, new DriveSpec { Id = "data", Path = "/d" } },
        NetworkInterfaces =
        {
            new NetworkInterfaceSpec { Id = "eth0", Tap = "tap0", Mac = "02:00:00:00:00:01", Ip = "10.0.0.2/24" },
            new NetworkInterfaceSpec { Id = "eth1", Auto = true },
        },
        Vsock = new VsockSpec { GuestCid = 7 },
        Agent = true,
        Rng = true,
    };

    [Fact]
    public void A_spec_maps_to_the_domain_and_back_unchanged()
    {
        var spec = FullSpec();
        var config = VmApiMapping.ToConfig(spec, "spec");
        Assert.Equal("/i", config.Kernel.InitrdPath);
        Assert.Null(config.NetworkInterfaces[1].Tap); // auto
        Assert.Equal(spec, VmApiMapping.ToProto(config));
        // Empty strings are "none" in the domain and empty again on the wire.
        var bare = new VmSpec { Kernel = new KernelSpec { Path = "/k" }, Machine = new MachineSpec { Vcpus = 1, MemMib = 1 } };
        var bareConfig = VmApiMapping.ToConfig(bare, "spec");
        Assert.Null(bareConfig.Kernel.Cmdline);
        Assert.Null(bareConfig.Vsock);
        Assert.Equal(bare, VmApiMapping.ToProto(bareConfig));
    }

    [Fact]
    public void What_the_domain_cannot_express_is_refused_with_its_field()
    {
        Assert.Equal("spec", Assert.Throws<VmApiException>(() => VmApiMapping.ToCommand(new CreateVmRequest { Id = "a" })).Field);
        var noHost = FullSpec();
        noHost.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "eth2" });
        Assert.Equal("spec.network_interfaces[2].host", Assert.Throws<VmApiException>(() => VmApiMapping.ToConfig(noHost, "spec")).Field);
        var states = new Google.Protobuf.Collections.RepeatedField<VmState> { VmState.Running, (VmState)42 };
        Assert.Equal("states[1]", Assert.Throws<VmApiException>(() => VmApiMapping.ToPhases(states, "states")).Field);
    }

    [Fact]
    public void Every_phase_and_end_kind_has_its_api_value()
    {
        foreach (var phase in System.Enum.GetValues<VmPhase>())
        {
            var state = VmApiMapping.ToProto(phase);
            Assert.NotEqual(VmState.Unspecified, state);
            Assert.Equal(phase, VmApiMapping.ToPhase(state));
        }
        foreach (var kind in System.Enum.GetValues<VmEndKind>())
            Assert.Equal(kind.ToString(), VmApiMapping.ToProto(new VmEnd(kind, "r", false, DateTimeOffset.UnixEpoch)).Kind.ToString());
    }
}
