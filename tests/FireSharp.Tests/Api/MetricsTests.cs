using System.Net;
using FireSharp.Daemon;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using FireSharp.Tests.Functions;
using FireSharp.Tests.Support;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Configuration;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// Issue 13's metrics: a daemon that has run VMs and a function serves /metrics on its metrics listener in a form
/// promtool accepts, with the VM, device and function series and plausible values; that listener serves nothing else.
/// </summary>
[Collection("kvm")]
public sealed class MetricsTests(ITestOutputHelper output)
{
    private const int SigStop = 19, SigCont = 18;

    [SkippableFact]
    public async Task A_daemon_that_ran_vms_and_a_function_serves_metrics_that_promtool_accepts()
    {
        int port = Prometheus.FreePort();
        var functionVms = new FakeFunctionVmFactory();
        await using var s = await ApiTestServer.StartAsync(output, o => o with { MetricsListen = $"127.0.0.1:{port}" }, functionVms: functionVms);
        string disk = Path.Combine(s.Options.StateDir, "disk.img");
        await File.WriteAllBytesAsync(disk, new byte[1 << 20]);

        // A guest that boots (boot-done, then it ends), and one that keeps running with a drive.
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "boot", Spec = ApiTestServer.Spec("boot-timer"), Start = true });
        await s.WaitForStateAsync("boot", VmState.Stopped);
        var live = ApiTestServer.Spec("counter");
        live.Drives.Add(new DriveSpec { Id = "d0", Path = disk });
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "live", Spec = live, Start = true });
        await s.ReadConsoleUntilAsync("live", "COUNTING");
        await RpcAssert.FailsAsync(StatusCode.AlreadyExists, () => s.Client.CreateVmAsync(new CreateVmRequest { Id = "live", Spec = live }).ResponseAsync, "id");

        // A function: one invocation that runs, then one refused at a reserved concurrency of 0.
        var functions = new FunctionService.FunctionServiceClient(s.Channel);
        await functions.CreateFunctionAsync(new CreateFunctionRequest { Spec = await StandInFunctionAsync(s.Options.StateDir, "echo") });
        var ran = await functions.InvokeAsync(new InvokeRequest { Name = "echo", Payload = ByteString.CopyFromUtf8("{}") });
        Assert.Equal("", ran.FunctionError);
        await functions.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 0 });
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => functions.InvokeAsync(new InvokeRequest { Name = "echo", Payload = ByteString.CopyFromUtf8("{}") }).ResponseAsync, null);

        string body = await Prometheus.ScrapeWithDevicesOfAsync(port, "live");
        output.WriteLine(body);
        await Prometheus.CheckAsync(body);

        // VMs.
        Assert.True(Prometheus.One(body, "firesharp_vm_creates_total") >= 2);
        Assert.True(Prometheus.One(body, "firesharp_vm_failures_total", "operation=\"create\"", "reason=\"already_exists\"") >= 1);
        Assert.True(Prometheus.One(body, "firesharp_vms", "state=\"running\"") >= 1);
        Assert.True(Prometheus.One(body, "firesharp_vms", "state=\"stopped\"") >= 1);
        Assert.True(Prometheus.One(body, "firesharp_vm_boot_duration_seconds_count") >= 1);
        Assert.True(Prometheus.One(body, "firesharp_vm_boot_duration_seconds_sum") > 0);
        Assert.True(Prometheus.One(body, "firesharp_vm_worker_resident_memory_bytes", "vm_id=\"live\"") > 1 << 20);

        // Devices of the live VM: its vCPU exited for port I/O (the console), the drive is there (the guest does not read it).
        Assert.True(Prometheus.One(body, "firesharp_vm_kvm_exits_total", "vm_id=\"live\"", "reason=\"io\"") > 0);
        Assert.Equal(0, Prometheus.One(body, "firesharp_vm_block_requests_total", "vm_id=\"live\"", "drive=\"d0\""));
        Assert.Equal(0, Prometheus.One(body, "firesharp_vm_block_read_bytes_total", "vm_id=\"live\"", "drive=\"d0\""));
        Assert.Equal(0, Prometheus.One(body, "firesharp_vm_block_throttled_seconds_total", "vm_id=\"live\"", "drive=\"d0\""));
        Assert.Empty(Prometheus.Samples(body, "firesharp_vm_kvm_exits_total", "vm_id=\"boot\"")); // it has no machine any more

        // The function.
        Assert.Equal(1, Prometheus.Samples(body, "firesharp_function_invocations_total", "function=\"echo\"", "outcome=\"success\"").Sum());
        Assert.Equal(1, Prometheus.Samples(body, "firesharp_function_duration_seconds_count", "function=\"echo\"").Sum());
        Assert.Equal(1, Prometheus.Samples(body, "firesharp_function_init_duration_seconds_count", "function=\"echo\"").Sum());
        Assert.Equal(1, Prometheus.One(body, "firesharp_function_throttles_total", "function=\"echo\"", "reason=\"reserved_concurrency\""));
        Assert.Equal((double)ran.GbSeconds * (1 << 30), Prometheus.One(body, "firesharp_function_billed_byte_seconds_total", "function=\"echo\""), 1.0);
        Assert.True(ran.GbSeconds > 0);
        Assert.Equal(0, Prometheus.One(body, "firesharp_function_concurrency_reserved", "function=\"echo\""));
        Assert.Equal(0, Prometheus.One(body, "firesharp_function_concurrency_in_use", "function=\"echo\""));
        Assert.Equal(1, Prometheus.One(body, "firesharp_function_vms", "function=\"echo\"", "state=\"idle\""));
        Assert.Equal(s.Options.FunctionConcurrencyLimit, Prometheus.One(body, "firesharp_functions_concurrency", "kind=\"limit\""));

        // Nothing but GET /metrics on that listener: not the gRPC API, not another path.
        using (var grpc = await Prometheus.GetAsync(port, "/firesharp.v1.VmService/ListVms", HttpMethod.Post))
            Assert.Equal(HttpStatusCode.NotFound, grpc.StatusCode);
        using (var other = await Prometheus.GetAsync(port, "/"))
            Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);

        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "live", Force = true });
        functionVms.ReleaseAll();
    }

    [SkippableFact]
    public async Task The_daemon_binary_serves_the_counters_of_a_jailed_worker()
    {
        int port = Prometheus.FreePort();
        await using var d = await DaemonUnderTest.StartAsync(output, [$"--MetricsListen=127.0.0.1:{port}"]);
        await d.Client.CreateVmAsync(new CreateVmRequest { Id = "one", Spec = ApiTestServer.Spec("counter"), Start = true });
        await d.ReadConsoleUntilAsync("one", "COUNTING");

        string body = await Prometheus.ScrapeWithDevicesOfAsync(port, "one");
        output.WriteLine(body);
        await Prometheus.CheckAsync(body);
        Assert.Equal(1, Prometheus.One(body, "firesharp_vm_creates_total"));
        Assert.Equal(1, Prometheus.One(body, "firesharp_vms", "state=\"running\""));
        Assert.True(Prometheus.One(body, "firesharp_vm_kvm_exits_total", "vm_id=\"one\"", "reason=\"io\"") > 0);
        Assert.True(Prometheus.One(body, "firesharp_vm_worker_resident_memory_bytes", "vm_id=\"one\"") > 1 << 20);
        double exits = Prometheus.One(body, "firesharp_vm_kvm_exits_total", "vm_id=\"one\"", "reason=\"io\"");

        // A worker that does not answer (stopped by SIGSTOP) holds a scrape up for about a second at most, and keeps its
        // last counters. The bound is the issue's own requirement (~1 s), checked with a wide margin for a loaded host.
        var vm = await d.Client.GetVmAsync(new GetVmRequest { Id = "one" });
        ProcInfo.SendSignal(vm.WorkerPid, SigStop);
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(1.5)); // past the cache's second
            var took = System.Diagnostics.Stopwatch.StartNew();
            body = await Prometheus.ScrapeAsync(port);
            took.Stop();
            Assert.True(took.Elapsed < TimeSpan.FromSeconds(5), $"the scrape took {took.Elapsed.TotalSeconds:F1} s with a hung worker");
            Assert.True(Prometheus.One(body, "firesharp_vm_kvm_exits_total", "vm_id=\"one\"", "reason=\"io\"") >= exits);
        }
        finally
        {
            ProcInfo.SendSignal(vm.WorkerPid, SigCont);
        }

        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "one", Force = true });
        d.AssertNothingLeft();
    }

    [Fact]
    public void The_metrics_listener_is_on_loopback_by_default_and_can_be_turned_off()
    {
        static DaemonOptions From(params string[] args) => DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(args).Build());
        Assert.Equal("127.0.0.1:9464", From().MetricsListen);
        Assert.Null(From("--MetricsListen=off").MetricsListen);
        Assert.Equal("[::1]:9100", From("--MetricsListen=[::1]:9100").MetricsListen);
        Assert.Contains("MetricsListen", Assert.Throws<ArgumentException>(() => From("--MetricsListen=nowhere")).Message);
    }

    /// <summary>A function spec over stand-in files (the fake VM factory boots nothing).</summary>
    private static async Task<FunctionSpec> StandInFunctionAsync(string dir, string name)
    {
        foreach (var f in (string[])["vmlinux", "rootfs.ext4", "code.ext4"])
            await File.WriteAllTextAsync(Path.Combine(dir, f), "stand-in");
        return new FunctionSpec
        {
            Name = name,
            Image = new FunctionImage { KernelPath = Path.Combine(dir, "vmlinux"), RootfsPath = Path.Combine(dir, "rootfs.ext4") },
            Code = new FunctionCode { ImagePath = Path.Combine(dir, "code.ext4") },
            Handler = "function.handler",
        };
    }
}
