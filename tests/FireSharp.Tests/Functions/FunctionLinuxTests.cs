using System.Diagnostics;
using System.Text;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Google.Protobuf;
using Xunit.Abstractions;

namespace FireSharp.Tests.Functions;

/// <summary>
/// Functions on real VMs: the real daemon (`build/firesharp serve`, as root, so every function VM's worker is
/// jailed, seccomp-filtered and in its cgroup) runs the busybox shell runtime (examples/shell/bootstrap) on the
/// Linux guest. FunctionCpuShare is off: Lambda's share for 128 MB (72 millicpus) would stretch each PVM-emulated
/// shell invocation to minutes (docs/isolation.md). One scenario shares its VMs: a boot cold start (which also takes
/// the version's snapshot), a warm start, a handler error (a function error, not a call error), a handler that
/// overruns its timeout (killed; its VM is recycled), and the next invocation on a fresh VM restored from the
/// snapshot. The root filesystem must carry an agent with function support (protocol 2): build/guest/rootfs.ext4
/// after `make rootfs`, or FIRESHARP_FN_ROOTFS.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public sealed class FunctionLinuxTests(ITestOutputHelper output)
{
    private const string Handler = """
        # Test handlers: the event picks the behaviour.
        handler() {
            case "$1" in
                *fail*) echo "asked to fail"; return 1 ;;
                *sleep*) echo "sleeping" >&2; sleep 900 ;;
            esac
            echo "handling $REQUEST_ID" >&2
            printf '{"echo":%s,"fn":"%s"}\n' "${1:-null}" "$AWS_LAMBDA_FUNCTION_NAME"
        }
        """;

    [SkippableFact]
    public async Task Shell_function_runs_cold_warm_fails_times_out_and_starts_from_its_snapshot()
    {
        string kernel = Path.Combine(TestPaths.RepoRoot, "build", "guest", "vmlinux");
        string rootfs = Environment.GetEnvironmentVariable("FIRESHARP_FN_ROOTFS") is { Length: > 0 } r ? r : Path.Combine(TestPaths.RepoRoot, "build", "guest", "rootfs.ext4");
        foreach (var f in new[] { kernel, rootfs }) TestEnvironment.RequireFile(f, "make kernel rootfs");
        await using var d = await DaemonUnderTest.StartAsync(output, ["--FunctionCpuShare=false"]);
        var client = new FunctionService.FunctionServiceClient(d.Channel);

        string task = Path.Combine(d.StateDir, "task");
        Directory.CreateDirectory(task);
        File.Copy(Path.Combine(TestPaths.RepoRoot, "examples", "shell", "bootstrap"), Path.Combine(task, "bootstrap"));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(Path.Combine(task, "bootstrap"), (UnixFileMode)0x1ed); // 0755
        await File.WriteAllTextAsync(Path.Combine(task, "function.sh"), Handler.Replace("\r", ""));

        var created = await client.CreateFunctionAsync(new CreateFunctionRequest
        {
            Spec = new FunctionSpec
            {
                Name = "shell",
                Image = new FunctionImage { KernelPath = kernel, RootfsPath = rootfs },
                Code = new FunctionCode { Directory = task },
                Handler = "function.handler",
                MemoryMib = 128,
                TimeoutSeconds = 120, // a shell invocation takes ~30 s on PVM (every fork is emulated kernel work)
                SnapshotStart = true,
            },
        });
        Assert.Equal(1, created.Spec.Vcpus);

        async Task<InvokeResponse> Invoke(string payload)
        {
            var sw = Stopwatch.StartNew();
            var reply = await client.InvokeAsync(new InvokeRequest { Name = "shell", Payload = ByteString.CopyFromUtf8(payload) }, deadline: DateTime.UtcNow.AddMinutes(10));
            output.WriteLine($"invoke {payload}: {reply.StartKind} status {reply.StatusCode} {reply.FunctionError} {reply.ErrorType} in {sw.ElapsedMilliseconds} ms " +
                $"(init {reply.InitDurationMs:F0} ms, duration {reply.DurationMs:F1} ms, max memory {reply.MaxMemoryUsedMib} MiB) [PVM host]: {reply.Payload.ToStringUtf8()}\nlog: {reply.LogTail}");
            return reply;
        }

        var cold = await Invoke("""{"n":1}""");
        Assert.Equal("", cold.FunctionError);
        Assert.Equal(StartKind.BootCold, cold.StartKind);
        Assert.Contains("\"echo\":{\"n\":1}", cold.Payload.ToStringUtf8(), StringComparison.Ordinal);
        Assert.Contains("\"fn\":\"shell\"", cold.Payload.ToStringUtf8(), StringComparison.Ordinal);
        Assert.True(cold.InitDurationMs > 0);

        var warm = await Invoke("""{"n":2}""");
        Assert.Equal(StartKind.Warm, warm.StartKind);
        Assert.Contains("\"echo\":{\"n\":2}", warm.Payload.ToStringUtf8(), StringComparison.Ordinal);
        Assert.Contains($"handling {warm.RequestId}", warm.LogTail, StringComparison.Ordinal);

        // The function's VM runs confined, as every VM of a root daemon does: its own uid, the seccomp filter.
        var fnVm = (await d.Client.ListVmsAsync(new ListVmsRequest())).Vms.First(vm => vm.Labels.ContainsKey("firesharp.function"));
        string status = await File.ReadAllTextAsync($"/proc/{fnVm.WorkerPid}/status");
        Assert.True(int.Parse(System.Text.RegularExpressions.Regex.Match(status, @"Uid:\s+(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, status);
        Assert.Matches(@"Seccomp:\s+2", status);

        var failed = await Invoke("""{"fail":true}""");
        Assert.Equal(200, failed.StatusCode);
        Assert.Equal("Handled", failed.FunctionError);
        Assert.Contains("asked to fail", failed.Payload.ToStringUtf8(), StringComparison.Ordinal);
        Assert.Equal(StartKind.Warm, failed.StartKind); // a handled error keeps the VM

        var slow = await Invoke("""{"sleep":true}""");
        Assert.Equal("Unhandled", slow.FunctionError);
        Assert.Contains("Timedout", slow.ErrorType + slow.Payload.ToStringUtf8(), StringComparison.OrdinalIgnoreCase);

        // The timed-out VM was recycled: the next invocation gets a new VM, restored from the version's snapshot.
        var fresh = await Invoke("""{"n":3}""");
        Assert.Equal("", fresh.FunctionError);
        Assert.Contains("\"echo\":{\"n\":3}", fresh.Payload.ToStringUtf8(), StringComparison.Ordinal);
        Assert.Equal(StartKind.SnapshotCold, fresh.StartKind);

        var stats = (await client.GetFunctionAsync(new GetFunctionRequest { Name = "shell" })).Stats;
        Assert.Equal(5, stats.Invocations);
        Assert.Equal(1, stats.BootColdStarts);
        Assert.Equal(1, stats.SnapshotColdStarts);
        await client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = "shell" });
        Assert.DoesNotContain((await d.Client.ListVmsAsync(new ListVmsRequest())).Vms, vm => vm.Labels.ContainsKey("firesharp.function"));
    }
}
