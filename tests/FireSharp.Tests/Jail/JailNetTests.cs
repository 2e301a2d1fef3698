using System.Diagnostics;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using FireSharp.Worker;
using Grpc.Core;
using Microsoft.Win32.SafeHandles;
using Xunit.Abstractions;

namespace FireSharp.Tests.Jail;

/// <summary>
/// Network interfaces of jailed VMs (docs/isolation.md, "Taps"): the jailer attaches each tap as root, in the
/// spec's network namespace (spec.netns_path) or the daemon's, before the worker gets its own, and hands the fd
/// over; the jailed worker adopts it (its real name from TUNGETIFF). Through the real daemon (build/firesharp,
/// jailed by default as root) with tiny ring-3 guests.
/// </summary>
[Collection("kvm")]
public sealed class JailNetTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string Tag = (Environment.ProcessId % 100000).ToString(System.Globalization.CultureInfo.InvariantCulture);
    private readonly string _ns = "fsjn" + Tag;

    private static DateTime Deadline => DateTime.UtcNow.AddMinutes(2);

    public void Dispose() => Run("ip", $"netns del {_ns}"); // removes its taps with it

    [SkippableFact]
    public async Task A_jailed_vm_gets_its_taps_from_the_jailer_and_they_go_with_it()
    {
        RequireTun();
        await using var d = await DaemonUnderTest.StartAsync(output);
        string tap = "fsjt" + Tag;
        int autosBefore = Directory.GetDirectories("/sys/class/net", "fstap*").Length;
        var spec = ApiTestServer.Spec("counter");
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Tap = tap, Mac = "02:00:00:00:00:07", Ip = "10.0.0.2/24" });
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth1", Auto = true });
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "jn", Spec = spec, Start = true }, deadline: Deadline);
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("jn", "COUNTING").WaitAsync(TimeSpan.FromMinutes(1)));

        // Both taps are in the daemon's (the host's) namespace, not the worker's own, and the jailed worker holds them.
        Assert.True(Directory.Exists("/sys/class/net/" + tap), "the jailer did not create the named tap in the daemon's namespace");
        Assert.Equal(autosBefore + 1, Directory.GetDirectories("/sys/class/net", "fstap*").Length);
        Assert.NotEqual(NetNs("self"), NetNs(vm.WorkerPid.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var held = TapsHeldBy(vm.WorkerPid);
        Assert.Contains(tap, held);
        Assert.Single(held, t => t.StartsWith("fstap", StringComparison.Ordinal));
        Assert.NotEqual("0", File.ReadAllLines($"/proc/{vm.WorkerPid}/status").Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1]);

        // A second VM on the same tap: the jailer cannot attach it, and the worker reports that as an unjailed one does.
        var again = ApiTestServer.Spec("hello");
        again.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Tap = tap });
        var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => d.Client.CreateVmAsync(new CreateVmRequest { Id = "jn2", Spec = again }, deadline: Deadline).ResponseAsync, "spec.network_interfaces[0]");
        Assert.Contains("in use", e.Status.Detail);

        var running = await d.Client.GetVmAsync(new GetVmRequest { Id = "jn" }, deadline: Deadline);
        Assert.Equal(VmState.Running, running.State);
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "jn", Force = true }, deadline: Deadline);
        Assert.False(Directory.Exists("/sys/class/net/" + tap), "the tap outlived its VM");
        Assert.Equal(autosBefore, Directory.GetDirectories("/sys/class/net", "fstap*").Length);
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task The_taps_come_from_the_given_network_namespace_and_the_worker_joins_it()
    {
        RequireTun();
        TestEnvironment.Require(Run("ip", "-V") == 0, "iproute2 is missing");
        Run("ip", $"netns del {_ns}"); // a leftover from an aborted run
        Assert.Equal(0, Run("ip", $"netns add {_ns}"));
        string nsPath = "/run/netns/" + _ns, tap = "fsjs" + Tag;
        await using var d = await DaemonUnderTest.StartAsync(output);
        var spec = ApiTestServer.Spec("counter");
        spec.NetnsPath = nsPath;
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Tap = tap });
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth1", Auto = true });
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "js", Spec = spec, Start = true }, deadline: Deadline);
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("js", "COUNTING").WaitAsync(TimeSpan.FromMinutes(1)));
        Assert.Equal(nsPath, (await d.Client.GetVmAsync(new GetVmRequest { Id = "js" }, deadline: Deadline)).Spec.NetnsPath);

        // Both taps are in that namespace (the automatic one is its first fstapN), not in the host's.
        var (code, links) = Capture("ip", $"-n {_ns} -o link show");
        Assert.Equal(0, code);
        Assert.Contains(tap + ":", links);
        Assert.Contains("fstap0:", links);
        Assert.False(Directory.Exists("/sys/class/net/" + tap), "the tap is in the host's namespace");
        var held = TapsHeldBy(vm.WorkerPid);
        Assert.Contains(tap, held);
        Assert.Contains("fstap0", held);
        // The worker itself runs in that namespace (no new one).
        Assert.Equal(NetNsOfFile(nsPath), NetNs(vm.WorkerPid.ToString(System.Globalization.CultureInfo.InvariantCulture)));

        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "js", Force = true }, deadline: Deadline);
        (code, links) = Capture("ip", $"-n {_ns} -o link show");
        Assert.Equal(0, code);
        Assert.DoesNotContain(tap + ":", links);
        Assert.DoesNotContain("fstap", links);

        // The CLI's vm create --netns.
        var (cli, json, stderr) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "--json", "create", "jc", "--kernel", TestPaths.Guest("counter"),
            "--mem-mib", "16", "--net", "id=eth0,tap=auto", "--netns", nsPath]).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(cli == 0, stderr);
        using (var doc = System.Text.Json.JsonDocument.Parse(json)) Assert.Equal("jc", doc.RootElement.GetProperty("id").GetString());
        Assert.Equal(nsPath, (await d.Client.GetVmAsync(new GetVmRequest { Id = "jc" }, deadline: Deadline)).Spec.NetnsPath);
        Assert.Contains("fstap0:", Capture("ip", $"-n {_ns} -o link show").Output);
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "jc", Force = true }, deadline: Deadline);
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task A_restored_jailed_vm_gets_the_snapshots_interfaces_from_its_jailer()
    {
        RequireTun();
        await using var d = await DaemonUnderTest.StartAsync(output);
        var spec = ApiTestServer.Spec("counter");
        spec.NetworkInterfaces.Add(new FireSharp.Proto.V1.NetworkInterfaceSpec { Id = "eth0", Auto = true });
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "src", Spec = spec, Start = true }, deadline: Deadline);
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("src", "COUNTING").WaitAsync(TimeSpan.FromMinutes(1)));
        string source = Assert.Single(TapsHeldBy(vm.WorkerPid));
        string snap = Path.Combine(d.StateDir, "snap");
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "src", Dir = snap, Resume = true }, deadline: Deadline);

        // An automatic tap: the restored VM gets a new one (the source still holds its own), attached by its jailer.
        var restored = await d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "dst" }, deadline: Deadline);
        Assert.Equal(VmState.Running, restored.State);
        var nic = Assert.Single(restored.Spec.NetworkInterfaces);
        Assert.Equal(("eth0", true), (nic.Id, nic.Auto));
        string copy = Assert.Single(TapsHeldBy(restored.WorkerPid));
        Assert.StartsWith("fstap", copy);
        Assert.NotEqual(source, copy);

        foreach (var id in (string[])["src", "dst"]) await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true }, deadline: Deadline);
        Assert.False(Directory.Exists("/sys/class/net/" + copy));
        d.AssertNothingLeft();
    }

    [SkippableTheory]
    [InlineData("relative/netns", "not an absolute path")]
    [InlineData("/nonexistent/netns/x", "does not exist")]
    [InlineData("/etc/hostname", "not a namespace file")]
    [InlineData("/proc/self/ns/mnt", "not a network namespace")]
    [InlineData("/tmp", "is a directory")]
    public async Task A_bad_netns_path_is_invalid_argument_naming_the_field(string path, string why)
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var spec = ApiTestServer.Spec("hello");
        spec.NetnsPath = path;
        var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => s.Client.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = spec }, deadline: Deadline).ResponseAsync, "spec.netns_path");
        Assert.Contains(why, e.Status.Detail);
    }

    [SkippableFact]
    public async Task An_unjailed_daemon_does_not_take_a_netns_path()
    {
        await using var s = await ApiTestServer.StartAsync(output); // Jail = false
        var spec = ApiTestServer.Spec("hello");
        spec.NetnsPath = "/proc/self/ns/net";
        await RpcAssert.FailsAsync(StatusCode.Unimplemented,
            () => s.Client.CreateVmAsync(new CreateVmRequest { Id = "free", Spec = spec }, deadline: Deadline).ResponseAsync, "spec.netns_path");
    }

    [SkippableFact]
    public void A_tap_handed_over_is_adopted_under_its_real_name_and_a_failure_is_reported_for_its_interface()
    {
        RequireTun();
        // What the jailer does for an automatic tap, and what the jailed worker does with the fd.
        using (var tap = TapBackend.Adopt(TapBackend.OpenForJail(null), "net[0]"))
        {
            Assert.StartsWith("fstap", tap.Name);
            Assert.True(Directory.Exists("/sys/class/net/" + tap.Name));
            Assert.True(tap.Created); // not persistent: it goes with the fd
            Assert.Contains(tap.Name, TapsHeldBy(Environment.ProcessId));
        }

        // By name through the registry: Open takes the handed-over tap instead of attaching one itself.
        string name = "fsju" + Tag;
        PreopenedTaps.Add(name, TapBackend.OpenForJail(name));
        using (var tap = TapBackend.Open(name, "net[1]"))
            Assert.Equal(name, tap.Name);
        Assert.False(Directory.Exists("/sys/class/net/" + name));

        string failed = "fsjf" + Tag;
        PreopenedTaps.AddFailure(failed, NetConfigError.TapBusy, "tap 'x' is in use by another process");
        var e = Assert.Throws<NetConfigException>(() => TapBackend.Open(failed, "net[2]"));
        Assert.Equal(("net[2]", NetConfigError.TapBusy), (e.Field, e.Reason));
    }

    [Fact]
    public void Tap_errors_pass_from_the_first_stage_to_the_second()
    {
        var args = WorkerArgs.Parse(["--jail", "/p", "--socket", "/s"]);
        TapError[] errors = [new(0, NetConfigError.TapBusy, "tap 'a' is in use: EBUSY"), new(2, NetConfigError.PermissionDenied, "no: with a colon\nand a line")];
        var argv = JailCommand.UnshareArgv(new Proto.Worker.JailPlan(), "/w", args, 3, [-1, 5, -1], errors);
        var second = WorkerArgs.Parse(argv[(argv.IndexOf("--") + 2)..]);
        Assert.Null(second.Error);
        Assert.Equal([-1, 5, -1], second.Fds);
        Assert.Equal([errors[0], errors[1] with { Message = "no: with a colon and a line" }], second.TapErrors);
        Assert.NotNull(WorkerArgs.Parse(["--jailed", "/p", "--socket", "/s", "--tap-errors", "x:TapBusy:m"]).Error);
        Assert.NotNull(WorkerArgs.Parse(["--jailed", "/p", "--socket", "/s", "--tap-errors", "0:NoSuchReason:m"]).Error);
        Assert.NotNull(WorkerArgs.Parse(["--socket", "/s", "--tap-errors", "0:TapBusy:m"]).Error); // only with --jailed
    }

    private static void RequireTun()
    {
        try
        {
            using var tap = TapBackend.Open(null);
        }
        catch (NetConfigException e)
        {
            TestEnvironment.Require(false, $"/dev/net/tun is not usable here: {e.Message}");
        }
    }

    /// <summary>The taps a process holds open (tun fds show <c>iff: NAME</c> in their fdinfo).</summary>
    private static List<string> TapsHeldBy(int pid)
    {
        var taps = new List<string>();
        foreach (var info in Directory.GetFiles($"/proc/{pid}/fdinfo"))
        {
            try
            {
                foreach (var line in File.ReadLines(info))
                    if (line.StartsWith("iff:", StringComparison.Ordinal)) taps.Add(line[4..].Trim());
            }
            catch (IOException) { } // closed meanwhile
        }
        return taps;
    }

    private static string NetNs(string pid) => new FileInfo($"/proc/{pid}/ns/net").LinkTarget!;

    private static string NetNsOfFile(string path)
    {
        var (code, inode) = Capture("stat", $"-L -c %i {path}");
        Assert.Equal(0, code);
        return $"net:[{inode.Trim()}]";
    }

    private static int Run(string file, string args) => Capture(file, args).Code;

    private static (int Code, string Output) Capture(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        string text = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, text);
    }
}
