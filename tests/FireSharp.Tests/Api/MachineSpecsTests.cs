using FireSharp.Worker;
using FireSharp.Devices;
using FireSharp.Proto.Worker;

namespace FireSharp.Tests.Api;

/// <summary>The worker's one mapping between the wire's device fields and device configs, and back for errors.</summary>
public sealed class MachineSpecsTests
{
    [Fact]
    public void The_worker_maps_device_fields_to_configs_and_device_errors_to_api_fields()
    {
        var machine = new CreateMachine { KernelPath = "/k", MemMib = 16, Vcpus = 1, VsockPath = "/tmp/v.sock", VsockCid = 5, Rng = true };
        machine.Drives.Add(new Drive { Path = "/a.img", Root = true });
        var spec = MachineSpecs.ToVmSpec(machine, FireSharp.Devices.Legacy.NullSerialSink.Instance, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.Equal(["virtio-blk", "virtio-vsock", "virtio-rng"], spec.Devices.Select(d => d.Kind));
        Assert.NotNull(spec.Rng);
        Assert.Null(MachineSpecs.ToVmSpec(new CreateMachine { KernelPath = "/k" }, FireSharp.Devices.Legacy.NullSerialSink.Instance,
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance).Rng);

        Assert.Equal("spec.drives[1].path", MachineSpecs.ApiField(FireSharp.Devices.Virtio.DriveSpec.FieldName(1)));
        Assert.Equal("spec.network_interfaces[0]", MachineSpecs.ApiField("net[0]"));
        Assert.Equal("spec.vsock", MachineSpecs.ApiField("vsock"));
        Assert.Equal("spec.rng", MachineSpecs.ApiField("rng"));
        Assert.Equal("spec", MachineSpecs.ApiField("virtio devices"));
        Assert.Equal(WorkerErrorCode.WorkerErrorUnavailable,
            MachineSpecs.Code(new FireSharp.Devices.Virtio.Net.NetConfigException("net[0]", FireSharp.Devices.Virtio.Net.NetConfigError.TunUnavailable, "no tun")));
        Assert.Equal(WorkerErrorCode.WorkerErrorInvalidArgument,
            MachineSpecs.Code(new FireSharp.Devices.Virtio.VirtioConfigException("drive[0]", FireSharp.Devices.Virtio.VirtioConfigError.ImageNotFound, "gone")));
        Assert.Equal(DeviceConfigProblem.NotFound, new FireSharp.Devices.Virtio.VirtioConfigException("drive[0]", FireSharp.Devices.Virtio.VirtioConfigError.ImageNotFound, "gone").Problem);
    }
}
