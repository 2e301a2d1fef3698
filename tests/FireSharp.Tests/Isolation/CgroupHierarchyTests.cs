using FireSharp.Daemon;
using FireSharp.Daemon.Isolation;
using FireSharp.Daemon.Vms;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Isolation;

/// <summary>
/// The cgroup layouts against fake trees (temporary directories holding the files the kernel would): which version
/// is detected, which limit files are written with what, and how a daemon that requires cgroups fails to start.
/// </summary>
public sealed class CgroupHierarchyTests : IDisposable
{
    private readonly string _root = TestPaths.TempDir();

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static readonly VmConfig Spec = new() { Kernel = new KernelConfig("/k"), Vcpus = 2, MemMib = 256 };

    private static string Read(params string[] path) => File.ReadAllText(Path.Combine(path)).Trim();

    private void FakeV2(string controllers)
    {
        File.WriteAllText(Path.Combine(_root, "cgroup.controllers"), controllers + "\n");
        File.WriteAllText(Path.Combine(_root, "cgroup.subtree_control"), "");
    }

    private void FakeV1(params string[] mounts)
    {
        foreach (var m in mounts)
        {
            Directory.CreateDirectory(Path.Combine(_root, m));
            File.WriteAllText(Path.Combine(_root, m, "cgroup.procs"), "");
        }
    }

    [Fact]
    public void OOM_kills_are_read_from_memory_oom_control_on_v1_and_memory_events_on_v2()
    {
        FakeV1("memory", "cpu");
        var v1 = CgroupHierarchy.Detect(_root, "fs")!;
        Assert.Equal(0, v1.OomKills("vm")); // no cgroup yet
        Directory.CreateDirectory(Path.Combine(_root, "memory", "fs", "vm"));
        File.WriteAllText(Path.Combine(_root, "memory", "fs", "vm", "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        Assert.Equal(2, v1.OomKills("vm"));

        string v2root = Path.Combine(_root, "v2");
        Directory.CreateDirectory(Path.Combine(v2root, "fs", "vm"));
        File.WriteAllText(Path.Combine(v2root, "cgroup.controllers"), "memory\n");
        File.WriteAllText(Path.Combine(v2root, "fs", "vm", "memory.events"), "low 0\nhigh 0\nmax 7\noom 3\noom_kill 1\noom_group_kill 0\n");
        Assert.Equal(1, CgroupHierarchy.Detect(v2root, "fs")!.OomKills("vm"));
    }

    [Fact]
    public void V2_enables_its_controllers_down_to_the_parent_and_writes_each_limit()
    {
        FakeV2("cpuset cpu io memory hugetlb pids rdma");
        var h = Assert.IsType<CgroupV2>(CgroupHierarchy.Detect(_root, "machine/firesharp"));
        Assert.Equal(CgroupVersion.V2, h.Version);
        Assert.Equal(["cpu", "io", "memory", "pids"], h.Controllers.Order(StringComparer.Ordinal));
        // io.weight exists only where the kernel offers it: here the VM's cgroup "has" it.
        string vmDir = Path.Combine(_root, "machine", "firesharp", "vm1");
        Directory.CreateDirectory(vmDir);
        File.WriteAllText(Path.Combine(vmDir, "io.weight"), "default 100\n");

        var limits = CgroupLimits.For(Spec with { CpuQuotaMillicpus = 1500 }, new DaemonOptions { CgroupIoWeight = 300 });
        h.Create("vm1", limits);
        h.AddProcess("vm1", 4242);

        Assert.Equal("+memory +cpu +pids +io", Read(_root, "cgroup.subtree_control"));
        Assert.Equal("+memory +cpu +pids +io", Read(_root, "machine", "cgroup.subtree_control"));
        Assert.Equal("+memory +cpu +pids +io", Read(_root, "machine", "firesharp", "cgroup.subtree_control"));
        Assert.Equal(((256L + 64) * 1024 * 1024).ToString(), Read(vmDir, "memory.max"));
        Assert.Equal("150000 100000", Read(vmDir, "cpu.max"));
        Assert.Equal("66", Read(vmDir, "pids.max")); // 2 vCPUs + the default allowance of 64
        Assert.Equal("default 300", Read(vmDir, "io.weight"));
        Assert.Equal("4242", Read(vmDir, "cgroup.procs"));
        Assert.Equal([vmDir], h.Directories("vm1"));
        Assert.Equal(["vm1"], h.Children());

        Assert.True(h.TryRemove("vm1", out var error), error);
        Assert.False(Directory.Exists(vmDir));
        Assert.Empty(h.Children());
    }

    [Fact]
    public void V2_without_controllers_still_makes_and_removes_the_cgroup_but_writes_no_limit()
    {
        FakeV2("");
        var h = CgroupHierarchy.Detect(_root, "firesharp")!;
        Assert.Empty(h.Controllers);
        h.Create("vm1", CgroupLimits.For(Spec, new DaemonOptions()));
        Assert.Equal("", Read(_root, "cgroup.subtree_control"));
        Assert.False(File.Exists(Path.Combine(_root, "firesharp", "vm1", "memory.max")));
        Assert.True(h.TryRemove("vm1", out _));
    }

    [Fact]
    public void V1_writes_each_controller_in_its_own_hierarchy()
    {
        FakeV1("memory", "cpu", "pids", "blkio", "freezer");
        var h = Assert.IsType<CgroupV1>(CgroupHierarchy.Detect(_root, "firesharp"));
        Assert.Equal(["cpu", "io", "memory", "pids"], h.Controllers.Order(StringComparer.Ordinal));
        var limits = CgroupLimits.For(Spec, new DaemonOptions { VmmMemoryAllowanceMib = 32, VmPidsAllowance = 40 });
        h.Create("vm1", limits);
        h.AddProcess("vm1", 4242);

        string Dir(string mount) => Path.Combine(_root, mount, "firesharp", "vm1");
        Assert.Equal(((256L + 32) * 1024 * 1024).ToString(), Read(Dir("memory"), "memory.limit_in_bytes"));
        Assert.Equal("0", Read(Dir("memory"), "memory.swappiness")); // no memsw file here: swappiness instead
        Assert.Equal("100000", Read(Dir("cpu"), "cpu.cfs_period_us"));
        Assert.Equal("300000", Read(Dir("cpu"), "cpu.cfs_quota_us")); // default: 2 vCPUs + 1
        Assert.Equal("42", Read(Dir("pids"), "pids.max"));
        Assert.False(File.Exists(Path.Combine(Dir("blkio"), "blkio.weight"))); // not configured
        foreach (var m in (string[])["memory", "cpu", "pids", "blkio"]) Assert.Equal("4242", Read(Dir(m), "cgroup.procs"));
        Assert.False(Directory.Exists(Path.Combine(_root, "freezer", "firesharp")));

        Assert.True(h.TryRemove("vm1", out var error), error);
        Assert.Empty(h.Children());
    }

    [Fact]
    public void V1_caps_swap_at_the_memory_limit_where_swap_is_accounted()
    {
        FakeV1("memory");
        string dir = Path.Combine(_root, "memory", "firesharp", "vm1");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "memory.memsw.limit_in_bytes"), "9223372036854771712");
        CgroupHierarchy.Detect(_root, "firesharp")!.Create("vm1", new CgroupLimits(100 << 20, 50_000, 20));
        Assert.Equal((100 << 20).ToString(), Read(dir, "memory.memsw.limit_in_bytes"));
        Assert.Equal((100 << 20).ToString(), Read(dir, "memory.limit_in_bytes"));
    }

    [Fact]
    public void Nothing_mounted_is_no_hierarchy()
    {
        Assert.Null(CgroupHierarchy.Detect(_root, "firesharp"));
    }

    private VmCgroups Cgroups(CgroupMode mode, string parent = "firesharp") =>
        new(new DaemonOptions { Cgroups = mode, CgroupRoot = _root, CgroupParent = parent }, NullLogger.Instance);

    [Fact]
    public void Required_cgroups_that_cannot_be_used_stop_the_daemon_with_a_typed_error()
    {
        Assert.Equal(CgroupFailure.NotMounted, Assert.Throws<CgroupException>(() => Cgroups(CgroupMode.Required).Initialize()).Failure);

        FakeV2("memory cpu");
        var e = Assert.Throws<CgroupException>(() => Cgroups(CgroupMode.Required).Initialize());
        Assert.Equal(CgroupFailure.ControllerMissing, e.Failure);
        Assert.Contains("pids", e.Message);

        File.WriteAllText(Path.Combine(_root, "cgroup.controllers"), "memory cpu pids\n");
        File.WriteAllText(Path.Combine(_root, "taken"), "a file where the parent cgroup would go");
        Assert.Equal(CgroupFailure.NotWritable, Assert.Throws<CgroupException>(() => Cgroups(CgroupMode.Required, "taken").Initialize()).Failure);

        var ok = Cgroups(CgroupMode.Required);
        ok.Initialize();
        Assert.True(ok.Enabled);
        Assert.True(Directory.Exists(Path.Combine(_root, "firesharp")));
    }

    [Fact]
    public void Auto_turns_cgroups_off_instead_of_failing_and_Off_never_looks()
    {
        var auto = Cgroups(CgroupMode.Auto);
        auto.Initialize(); // nothing mounted
        Assert.False(auto.Enabled);

        FakeV1("memory", "cpu", "pids");
        var off = Cgroups(CgroupMode.Off);
        off.Initialize();
        Assert.False(off.Enabled);
        Assert.False(Directory.Exists(Path.Combine(_root, "memory", "firesharp")));

        var on = Cgroups(CgroupMode.Auto); // the tests run as root
        on.Initialize();
        Assert.Equal(Environment.IsPrivilegedProcess, on.Enabled);
    }

    [Fact]
    public async Task Reaping_removes_the_cgroups_of_no_live_vm_and_leaves_those_with_processes()
    {
        FakeV2("memory cpu pids");
        var cgroups = Cgroups(CgroupMode.Required);
        cgroups.Initialize();
        var h = cgroups.Hierarchy!;
        foreach (var name in (string[])["live", "gone", "busy"]) h.Create(name, new CgroupLimits(1 << 30, 100_000, 64));
        File.WriteAllText(Path.Combine(_root, "firesharp", "busy", "cgroup.procs"), "1\n");
        await cgroups.ReapAsync(name => name == "live").WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(["busy", "live"], h.Children());
    }
}
