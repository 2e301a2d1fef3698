using System.Globalization;
using System.Text.Json;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Isolation;

/// <summary>
/// The check through the real daemon (build/firesharp serve, as root, so cgroups are on by default):
/// a running VM's worker is in a per-VM cgroup with a memory limit set, and its spec's CPU quota is applied.
/// </summary>
[Collection("kvm")]
public sealed class DaemonCgroupTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task A_running_VMs_worker_is_in_its_cgroup_with_a_memory_limit_and_its_CPU_quota()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        string guest = TestPaths.Guest("counter");
        var (code, json, stderr) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "--json", "create", "q", "--kernel", guest, "--mem-mib", "32",
            "--cpu-quota-millicpus", "250", "--start"]);
        Assert.True(code == 0, stderr);
        int pid;
        using (var doc = JsonDocument.Parse(json)) pid = doc.RootElement.GetProperty("worker_pid").GetInt32();
        Assert.True(ProcInfo.IsAlive(pid));

        Assert.Equal($"/{d.CgroupParent}/q", CgroupTestSupport.CgroupOf(pid, "memory"));
        string memory = Path.Combine(CgroupTestSupport.Root, "memory", d.CgroupParent, "q");
        Assert.Equal(((32L + 64) * 1024 * 1024).ToString(CultureInfo.InvariantCulture), File.ReadAllText(Path.Combine(memory, "memory.limit_in_bytes")).Trim());
        Assert.Equal("25000", File.ReadAllText(Path.Combine(CgroupTestSupport.Root, "cpu", d.CgroupParent, "q", "cpu.cfs_quota_us")).Trim());
        var vm = await d.Client.GetVmAsync(new GetVmRequest { Id = "q" });
        Assert.Equal(250, vm.Spec.Machine.CpuQuotaMillicpus);

        // A quota below the kernel's minimum is refused before anything starts.
        var bad = ApiTestServer.Spec("counter");
        bad.Machine.CpuQuotaMillicpus = 5;
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => d.Client.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = bad }).ResponseAsync,
            "spec.machine.cpu_quota_millicpus");

        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "q", Force = true });
        Assert.False(Directory.Exists(memory));
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task A_worker_killed_by_its_memory_cgroup_ends_the_VM_as_out_of_memory()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        // memtouch.elf writes to every page from 4 MiB to 256 MiB from ring 3, then resets.
        var (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "create", "oom", "--kernel", TestPaths.Guest("memtouch"), "--mem-mib", "288"]);
        Assert.True(code == 0, stderr);
        string memory = Path.Combine(CgroupTestSupport.Root, "memory", d.CgroupParent, "oom");
        Assert.True(Directory.Exists(memory), memory);
        // The limit the daemon set (guest + allowance) lets the guest touch all of its memory; this one does not.
        const string Limit = "100663296"; // 96 MiB
        File.WriteAllText(Path.Combine(memory, "memory.limit_in_bytes"), Limit);
        if (File.Exists(Path.Combine(memory, "memory.memsw.limit_in_bytes"))) File.WriteAllText(Path.Combine(memory, "memory.memsw.limit_in_bytes"), Limit);

        await d.Client.StartVmAsync(new StartVmRequest { Id = "oom" });
        FireSharp.Proto.V1.Vm vm;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        do
        {
            await Task.Delay(200);
            vm = await d.Client.GetVmAsync(new GetVmRequest { Id = "oom" });
        }
        while (vm.State != VmState.Failed && vm.State != VmState.Stopped && DateTime.UtcNow < deadline);
        Assert.Equal(VmState.Failed, vm.State);
        Assert.Equal(ExitKind.OutOfMemory, vm.Exit.Kind);
        Assert.Contains("OOM killer", vm.Exit.Reason);
        Assert.False(vm.Exit.Clean);

        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "oom", Force = true });
        d.AssertNothingLeft();
    }
}
