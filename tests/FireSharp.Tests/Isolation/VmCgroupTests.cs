using System.Globalization;
using FireSharp.Daemon;
using FireSharp.Daemon.Isolation;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Kvm.Interop;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Isolation;

/// <summary>
/// Per-VM cgroups for real, on this host's hierarchies: the daemon (its VM manager, in the test process) starts
/// real <c>firesharp-vmm</c> workers (from `make build`), each of which must be in its VM's cgroup with the
/// computed limits before it builds the machine; deleting the VM removes the cgroup; a restarted daemon reaps the
/// cgroups of VMs whose workers are gone. Each test has a parent cgroup of its own, removed afterwards.
/// </summary>
[Collection("kvm")]
public sealed class VmCgroupTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly string _stateDir = ApiTestServer.NewStateDir();
    private readonly string _parent = CgroupTestSupport.UniqueParent();
    private readonly List<VmManager> _managers = [];
    private readonly List<int> _workers = [];
    private string _root = CgroupTestSupport.Root;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var m in _managers) await m.DisposeAsync();
        foreach (int pid in _workers) ProcInfo.SendSignal(pid, ProcInfo.SIGKILL);
        foreach (int pid in _workers)
            for (int i = 0; i < 100 && ProcInfo.IsAlive(pid); i++) await Task.Delay(20);
        CgroupTestSupport.RemoveParent(_root, _parent);
        try { Directory.Delete(_stateDir, recursive: true); }
        catch (IOException) { }
    }

    private static string WorkerBinary()
    {
        string path = Path.Combine(TestPaths.RepoRoot, "build", "firesharp-vmm");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing: run `make build` (make test does)", path);
        return path;
    }

    private async Task<VmManager> StartDaemonAsync(CgroupMode mode = CgroupMode.Required)
    {
        KvmTestSupport.RequireKvm();
        // The guests live in the repository: every path is allowed (as ApiTestServer does; PathPolicyDaemonTests narrows it).
        var options = new DaemonOptions { StateDir = _stateDir, Socket = Path.Combine(_stateDir, "api.sock"), Cgroups = mode, CgroupRoot = _root, CgroupParent = _parent, AllowedPathRoots = ["/"] };
        var manager = new VmManager(options, new ProcessWorkerLauncher(WorkerBinary()), HostLimits.Detect(), NullLogger<VmManager>.Instance);
        _managers.Add(manager);
        await manager.InitializeAsync(CancellationToken.None).WaitAsync(Timeout);
        return manager;
    }

    private async Task<VmInfo> CreateAsync(VmManager manager, string id, int cpuQuotaMillicpus = 0)
    {
        var spec = new VmConfig { Kernel = new KernelConfig(TestPaths.Guest("counter")), Vcpus = 1, MemMib = 16, CpuQuotaMillicpus = cpuQuotaMillicpus };
        var vm = await manager.CreateAsync(new CreateVmCommand(id, spec) { Start = true }, CancellationToken.None).WaitAsync(Timeout);
        _workers.Add(vm.WorkerPid);
        Assert.NotEqual(Environment.ProcessId, vm.WorkerPid);
        return vm;
    }

    private static string ReadValue(string dir, string file) => File.ReadAllText(Path.Combine(dir, file)).Trim();

    [SkippableFact]
    public async Task A_VMs_worker_runs_in_its_own_cgroup_with_the_computed_limits_until_the_VM_is_deleted()
    {
        var manager = await StartDaemonAsync();
        var hierarchy = manager.Cgroups!;
        var vm = await CreateAsync(manager, "cg1", cpuQuotaMillicpus: 500);
        string expected = $"/{_parent}/cg1";
        long memory = (16L + manager.Options.VmmMemoryAllowanceMib) * 1024 * 1024;
        if (hierarchy.Version == CgroupVersion.V1)
        {
            // This host's (and CI's) layout: every controller is its own hierarchy.
            Assert.Equal(expected, CgroupTestSupport.CgroupOf(vm.WorkerPid, "memory"));
            Assert.Equal(expected, CgroupTestSupport.CgroupOf(vm.WorkerPid, "cpu"));
            Assert.Equal(expected, CgroupTestSupport.CgroupOf(vm.WorkerPid, "pids"));
            string mem = Path.Combine(_root, "memory", _parent, "cg1");
            Assert.Equal(memory.ToString(CultureInfo.InvariantCulture), ReadValue(mem, "memory.limit_in_bytes"));
            Assert.Contains(vm.WorkerPid.ToString(CultureInfo.InvariantCulture), File.ReadAllLines(Path.Combine(mem, "cgroup.procs")));
            Assert.Equal("50000", ReadValue(Path.Combine(_root, "cpu", _parent, "cg1"), "cpu.cfs_quota_us"));
            Assert.Equal("100000", ReadValue(Path.Combine(_root, "cpu", _parent, "cg1"), "cpu.cfs_period_us"));
            Assert.Equal((1 + manager.Options.VmPidsAllowance).ToString(CultureInfo.InvariantCulture), ReadValue(Path.Combine(_root, "pids", _parent, "cg1"), "pids.max"));
            // Every thread of the worker is in it (cgroup.procs moves the whole process).
            foreach (var task in Directory.GetDirectories($"/proc/{vm.WorkerPid}/task"))
                Assert.Contains($":memory:{expected}", File.ReadAllText(Path.Combine(task, "cgroup")));
        }
        else
        {
            Assert.Equal(expected, CgroupTestSupport.CgroupOf(vm.WorkerPid, ""));
            Assert.Equal(memory.ToString(CultureInfo.InvariantCulture), ReadValue(Path.Combine(_root, _parent, "cg1"), "memory.max"));
            Assert.Equal("50000 100000", ReadValue(Path.Combine(_root, _parent, "cg1"), "cpu.max"));
        }
        // The worker's memory is charged there: the VM runs inside its limit.
        Assert.Equal(VmPhase.Running, manager.Get("cg1").Phase);

        await manager.DeleteAsync("cg1", force: true, CancellationToken.None).WaitAsync(Timeout);
        Assert.False(ProcInfo.IsAlive(vm.WorkerPid));
        Assert.False(hierarchy.Exists("cg1"));
        foreach (var dir in hierarchy.Directories("cg1")) Assert.False(Directory.Exists(dir), dir);
    }

    /// <summary>
    /// A live VM's CPU quota changes in its cgroup and its recorded spec (how a function VM gets its Lambda share
    /// after its boot); a quota below the kernel's smallest is refused and changes nothing.
    /// </summary>
    [SkippableFact]
    public async Task A_live_VMs_CPU_quota_changes_in_its_cgroup_and_its_spec()
    {
        var manager = await StartDaemonAsync();
        var hierarchy = manager.Cgroups!;
        await CreateAsync(manager, "cq1");
        string Quota() => hierarchy.Version == CgroupVersion.V1
            ? ReadValue(Path.Combine(_root, "cpu", _parent, "cq1"), "cpu.cfs_quota_us")
            : ReadValue(Path.Combine(_root, _parent, "cq1"), "cpu.max").Split(' ')[0];
        Assert.Equal("200000", Quota()); // the default: vCPUs + 1

        var info = await manager.SetCpuQuotaAsync("cq1", 72, CancellationToken.None).WaitAsync(Timeout);
        Assert.Equal(72, info.Spec.CpuQuotaMillicpus);
        Assert.Equal(72, manager.Get("cq1").Spec.CpuQuotaMillicpus);
        Assert.Equal("7200", Quota());

        var e = await Assert.ThrowsAsync<VmApiException>(() => manager.SetCpuQuotaAsync("cq1", 5, CancellationToken.None).WaitAsync(Timeout));
        Assert.Equal("cpu_quota_millicpus", e.Field);
        Assert.Equal("7200", Quota());
        Assert.Equal(VmPhase.Running, manager.Get("cq1").Phase);
        await manager.DeleteAsync("cq1", force: true, CancellationToken.None).WaitAsync(Timeout);
    }

    [SkippableFact]
    public async Task A_restarted_daemon_reaps_the_cgroups_of_VMs_whose_workers_are_gone_and_keeps_the_live_ones()
    {
        var first = await StartDaemonAsync();
        var hierarchy = first.Cgroups!;
        var live = await CreateAsync(first, "live");
        var dead = await CreateAsync(first, "dead");
        await first.DisposeAsync(); // the daemon stops; its workers run on
        _managers.Remove(first);

        ProcInfo.SendSignal(dead.WorkerPid, ProcInfo.SIGKILL);
        for (int i = 0; i < 250 && ProcInfo.IsAlive(dead.WorkerPid); i++) await Task.Delay(20);
        Assert.False(ProcInfo.IsAlive(dead.WorkerPid));
        // A cgroup whose VM is gone altogether (say, deleted by a daemon that crashed before its rmdir).
        hierarchy.Create("ghost", new CgroupLimits(64 << 20, 100_000, 16));
        Assert.Equal(["dead", "ghost", "live"], hierarchy.Children());

        var second = await StartDaemonAsync();
        Assert.Equal(["live"], second.Cgroups!.Children());
        Assert.Equal(VmPhase.Running, second.Get("live").Phase);
        Assert.Equal(VmPhase.Failed, second.Get("dead").Phase);
        Assert.Contains(live.WorkerPid, hierarchy.Processes("live"));

        await second.DeleteAsync("live", force: true, CancellationToken.None).WaitAsync(Timeout);
        await second.DeleteAsync("dead", force: true, CancellationToken.None).WaitAsync(Timeout);
        Assert.Empty(second.Cgroups!.Children());
    }

    [SkippableFact]
    public async Task On_a_real_cgroup2_mount_the_worker_is_moved_in_and_the_cgroup_removed()
    {
        // This host's cgroup2 mount (/sys/fs/cgroup/unified in the hybrid layout) has no controllers: the VM's
        // processes are grouped there, and limits are the v1 hierarchies' job (tested above and on fake trees).
        _root = CgroupTestSupport.Cgroup2Root();
        Assert.True(File.Exists(Path.Combine(_root, "cgroup.controllers")), $"{_root} is not a cgroup2 mount");
        var manager = await StartDaemonAsync(CgroupMode.Auto);
        Assert.Equal(CgroupVersion.V2, manager.Cgroups!.Version);
        var vm = await CreateAsync(manager, "v2");
        string expected = $"/{_parent}/v2";
        Assert.Equal(expected, CgroupTestSupport.CgroupOf(vm.WorkerPid, ""));
        Assert.Contains(vm.WorkerPid, manager.Cgroups.Processes("v2"));

        await manager.DeleteAsync("v2", force: true, CancellationToken.None).WaitAsync(Timeout);
        Assert.False(Directory.Exists(Path.Combine(_root, _parent, "v2")));
    }
}
