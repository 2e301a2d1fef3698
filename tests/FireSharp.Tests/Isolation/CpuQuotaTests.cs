using FireSharp.Daemon;
using FireSharp.Daemon.Functions;
using FireSharp.Daemon.Functions.Lambda;
using FireSharp.Daemon.Isolation;
using FireSharp.Daemon.Vms;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Tests.Isolation;

/// <summary>
/// A VM's CPU quota: Lambda's mapping from a function's memory (one CPU at 1,769 MB, in proportion), the
/// spec field's validation and its way through the API mapping, and the daemon's cgroup settings.
/// </summary>
public sealed class CpuQuotaTests
{
    [Theory]
    [InlineData(128, 72)]     // Lambda's smallest function: 7% of a CPU
    [InlineData(1769, 1000)]  // one full vCPU
    [InlineData(3538, 2000)]  // twice the memory, twice the CPU
    [InlineData(10240, 5789)] // Lambda's largest: 5.79 CPUs
    public void A_functions_memory_buys_CPU_in_proportion(int memoryMib, int millicpus)
    {
        Assert.Equal(millicpus, LambdaResources.CpuQuotaMillicpus(memoryMib));
        Assert.Equal(millicpus * 100L, CgroupLimits.MillicpusToQuota(millicpus)); // microseconds per 100 ms period
    }

    [Fact]
    public void Doubling_a_functions_memory_doubles_its_CPU()
    {
        for (int mib = FunctionValidator.MinMemoryMib; mib * 2 <= FunctionValidator.MaxMemoryMib; mib += 61)
            Assert.InRange(LambdaResources.CpuQuotaMillicpus(mib * 2) - 2 * LambdaResources.CpuQuotaMillicpus(mib), -1, 1); // rounding only
    }

    [Fact]
    public void A_functions_VM_carries_its_Lambda_CPU_quota()
    {
        var f = new FunctionDefinition
        {
            Name = "f", Version = "1", KernelPath = "/k", RootfsPath = "/r", CodeImagePath = "/c", Handler = "h", MemoryMib = 3538, Vcpus = 2,
        };
        Assert.Equal(2000, FunctionVmSpec.Config(f).CpuQuotaMillicpus);
        Assert.Equal(72, FunctionVmSpec.Config(f with { MemoryMib = 128, Vcpus = 1 }).CpuQuotaMillicpus);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1)]
    [InlineData(9)]
    [InlineData(254_001)]
    public void An_out_of_range_quota_is_an_invalid_argument_naming_the_field(int millicpus)
    {
        var e = Assert.Throws<VmApiException>(() => SpecValidator.ValidateCpuQuota(millicpus, "spec.machine.cpu_quota_millicpus"));
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("spec.machine.cpu_quota_millicpus", e.Field);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(10)]
    [InlineData(1500)]
    [InlineData(254_000)]
    public void A_quota_in_range_or_none_is_accepted(int millicpus) => SpecValidator.ValidateCpuQuota(millicpus, "f");

    [Fact]
    public void The_quota_goes_through_the_API_mapping_both_ways()
    {
        var spec = new VmSpec { Kernel = new KernelSpec { Path = "/k" }, Machine = new MachineSpec { Vcpus = 1, MemMib = 16, CpuQuotaMillicpus = 250 } };
        var config = VmApiMapping.ToConfig(spec, "spec");
        Assert.Equal(250, config.CpuQuotaMillicpus);
        Assert.Equal(250, VmApiMapping.ToProto(config).Machine.CpuQuotaMillicpus);

        var restore = VmApiMapping.ToCommand(new RestoreVmRequest { Id = "r", Dir = "/s", Overrides = new RestoreOverrides { CpuQuotaMillicpus = 500 } });
        Assert.Equal(500, restore.CpuQuotaMillicpus);
        Assert.Equal(500, VmApiMapping.ToProto(restore).Overrides.CpuQuotaMillicpus);
    }

    [Fact]
    public void Without_a_quota_a_VM_may_use_one_CPU_per_vCPU_and_one_for_its_devices()
    {
        var spec = new VmConfig { Kernel = new KernelConfig("/k"), Vcpus = 3, MemMib = 100 };
        var limits = CgroupLimits.For(spec, new DaemonOptions());
        Assert.Equal(400_000, limits.CpuQuotaMicros);
        Assert.Equal((100L + 64) << 20, limits.MemoryBytes);
        Assert.Equal(67, limits.PidsMax);
        Assert.Null(limits.IoWeight);
        Assert.Equal(25_000, CgroupLimits.For(spec with { CpuQuotaMillicpus = 250 }, new DaemonOptions()).CpuQuotaMicros);
    }

    private static DaemonOptions Configure(params (string Key, string Value)[] pairs) =>
        DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddInMemoryCollection(pairs.Select(p => new KeyValuePair<string, string?>(p.Key, p.Value))).Build());

    [Fact]
    public void The_daemons_cgroup_settings_are_read_and_checked()
    {
        var o = Configure(("Cgroups", "required"), ("CgroupRoot", "/tmp/cg"), ("CgroupParent", "machine.slice/firesharp"),
            ("VmmMemoryAllowanceMib", "96"), ("VmPidsAllowance", "100"), ("CgroupIoWeight", "200"));
        Assert.Equal(CgroupMode.Required, o.Cgroups);
        Assert.Equal("/tmp/cg", o.CgroupRoot);
        Assert.Equal("machine.slice/firesharp", o.CgroupParent);
        Assert.Equal(96, o.VmmMemoryAllowanceMib);
        Assert.Equal(100, o.VmPidsAllowance);
        Assert.Equal(200, o.CgroupIoWeight);

        var defaults = new DaemonOptions();
        Assert.Equal((CgroupMode.Auto, "/sys/fs/cgroup", "firesharp"), (defaults.Cgroups, defaults.CgroupRoot, defaults.CgroupParent));

        foreach (var (key, value) in (ValueTuple<string, string>[])[("Cgroups", "sometimes"), ("Cgroups", "7"), ("CgroupRoot", "sys/fs/cgroup"),
            ("CgroupParent", "../escape"), ("CgroupParent", "/abs"), ("CgroupParent", "a//b"), ("VmmMemoryAllowanceMib", "4"), ("VmPidsAllowance", "2"), ("CgroupIoWeight", "0")])
            Assert.Contains(key, Assert.Throws<ArgumentException>(() => Configure((key, value))).Message);
    }
}
