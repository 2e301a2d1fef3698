using System.Diagnostics;
using FireSharp.Proto.V1;
using FireSharp.Kvm.Interop;
using FireSharp.Tests.Api;
using FireSharp.Tests.Isolation;
using FireSharp.Tests.Support;
using Xunit.Abstractions;

namespace FireSharp.Tests.Jail;

/// <summary>
/// The jail as the issue checks it, through the real daemon (build/firesharp serve, jailed by default as root) and
/// its `firesharp-vmm` workers: each VM's worker runs as its own uid without capabilities, with no_new_privs, in
/// its own mount, pid, ipc, uts and net namespaces, pivoted into <c>&lt;StateDir&gt;/jail/&lt;id&gt;/root</c>, in its
/// VM's cgroup; neither of two VMs can open the other's drive; and what a VM leaves behind is reaped.
/// </summary>
[Collection("kvm")]
public sealed class JailDaemonTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task A_jailed_worker_has_its_own_uid_no_privileges_its_own_namespaces_and_root()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        string driveA = Drive(d, "a.img"), driveB = Drive(d, "b.img");
        var a = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "ja", Spec = WithDrive(ApiTestServer.Spec("counter"), driveA), Start = true });
        var b = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "jb", Spec = WithDrive(ApiTestServer.Spec("counter"), driveB), Start = true });
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("ja", "COUNTING")); // the jailed VM runs
        // What the VMM reads of the host's /sys (PVM or not) is read before the pivot_root: a jailed worker on a PVM
        // host applies the PVM workarounds (without them a restored Linux guest dies in KVM's emulator).
        if (Directory.Exists("/sys/module/kvm_pvm"))
            Assert.Contains("PVM host detected", File.ReadAllText(Path.Combine(d.StateDir, "vms", "ja", "worker.log")), StringComparison.Ordinal);

        var (uidA, gidA) = CheckConfined(d, "ja", a.WorkerPid);
        var (uidB, gidB) = CheckConfined(d, "jb", b.WorkerPid);
        Assert.NotEqual(uidA, uidB);

        // Neither VM's uid can open the other's drive (its own came as an fd), nor reach into the other's jail.
        Assert.Equal(0, await ShAsUidAsync(null, $"exec 3< '{driveA}'")); // the check itself works (as root)
        Assert.NotEqual(0, await ShAsUidAsync((uidB, gidB), $"exec 3< '{driveA}'"));
        Assert.NotEqual(0, await ShAsUidAsync((uidA, gidA), $"exec 3< '{driveB}'"));
        Assert.NotEqual(0, await ShAsUidAsync((uidB, gidB), $"ls /proc/{a.WorkerPid}/root/"));
        // Nor is the other's drive (or its own) a path inside its jail.
        Assert.False(File.Exists($"/proc/{b.WorkerPid}/root{driveA}"));
        Assert.False(File.Exists($"/proc/{a.WorkerPid}/root{driveB}"));

        foreach (var id in new[] { "ja", "jb" }) await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
        Assert.False(Directory.Exists(Path.Combine(d.StateDir, "jail", "ja")));
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task An_unjailed_daemon_runs_workers_as_root_in_the_hosts_namespaces()
    {
        await using var d = await DaemonUnderTest.StartAsync(output, ["--Jail=false"]);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "free", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("free", "COUNTING"));
        Assert.Contains("Uid:\t0\t0\t0\t0", File.ReadAllText($"/proc/{vm.WorkerPid}/status"));
        Assert.Equal(Ns("self", "mnt"), Ns(vm.WorkerPid.ToString(System.Globalization.CultureInfo.InvariantCulture), "mnt"));
        Assert.False(Directory.Exists(Path.Combine(d.StateDir, "jail", "free")));
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "free", Force = true });
        d.AssertNothingLeft();
    }

    /// <summary>Checks the worker's confinement; returns its uid and gid.</summary>
    private static (uint Uid, uint Gid) CheckConfined(DaemonUnderTest d, string id, int pid)
    {
        var status = File.ReadAllLines($"/proc/{pid}/status").Select(l => l.Split(':', 2)).ToDictionary(p => p[0], p => p[1].Trim());
        var uids = status["Uid"].Split('\t').Select(uint.Parse).ToList();
        var gids = status["Gid"].Split('\t').Select(uint.Parse).ToList();
        Assert.All(uids, u => Assert.NotEqual(0u, u));
        Assert.Single(uids.Distinct());
        Assert.Single(gids.Distinct());
        Assert.Equal("", status["Groups"]);
        foreach (var set in new[] { "CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb" }) Assert.Equal("0000000000000000", status[set]);
        Assert.Equal("1", status["NoNewPrivs"]);

        // Its root is the VM's jail directory: a file put there on the host is what the worker sees at its /.
        string jailRoot = Path.Combine(d.StateDir, "jail", id, "root");
        string marker = "marker-" + Guid.NewGuid().ToString("N")[..8];
        File.WriteAllText(Path.Combine(jailRoot, marker), "");
        Assert.True(File.Exists($"/proc/{pid}/root/{marker}"));
        File.Delete(Path.Combine(jailRoot, marker));
        Assert.True(File.Exists($"/proc/{pid}/root/dev/kvm"));
        Assert.False(Directory.Exists($"/proc/{pid}/root/etc"));
        Assert.False(Directory.Exists($"/proc/{pid}/root/proc/1"));

        string p = pid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (var ns in new[] { "mnt", "pid", "ipc", "net", "uts" }) Assert.NotEqual(Ns("self", ns), Ns(p, ns));

        // The jailed worker itself (not unshare, its parent) is in the VM's cgroup, every thread of it, with a memory limit.
        string cgroup = $"/{d.CgroupParent}/{id}";
        foreach (var controller in new[] { "memory", "cpu", "pids" }) Assert.Equal(cgroup, CgroupTestSupport.CgroupOf(pid, controller));
        foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            Assert.Contains(File.ReadAllLines(Path.Combine(task, "cgroup")), l => l.EndsWith($":memory:{cgroup}", StringComparison.Ordinal));
        long limit = long.Parse(File.ReadAllText(Path.Combine(CgroupTestSupport.Root, "memory", d.CgroupParent, id, "memory.limit_in_bytes")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal((16L + 64) * 1024 * 1024, limit); // ApiTestServer.Spec's 16 MiB + the default VMM allowance
        int parent = ParentPid(pid);
        Assert.StartsWith("unshare ", File.ReadAllText($"/proc/{parent}/cmdline").Replace('\0', ' '), StringComparison.Ordinal);
        Assert.NotEqual(cgroup, CgroupTestSupport.CgroupOf(parent, "memory"));
        return (uids[0], gids[0]);
    }

    /// <summary>
    /// A VM that disappears while the daemon is down (its worker killed, its record gone): the restarted daemon
    /// removes its jail and run directories and its cgroup.
    /// </summary>
    [SkippableFact]
    public async Task A_restarted_daemon_reaps_the_jail_and_cgroup_of_a_VM_that_is_gone()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "gone", Spec = ApiTestServer.Spec("counter"), Start = true });
        string jail = Path.Combine(d.StateDir, "jail", "gone"), run = Path.Combine(d.StateDir, "run", "gone");
        string cgroup = Path.Combine(CgroupTestSupport.Root, "memory", d.CgroupParent, "gone");
        Assert.True(Directory.Exists(jail));
        Assert.True(Directory.Exists(run));
        Assert.True(Directory.Exists(cgroup));
        await d.KillAndRestartAsync(async () =>
        {
            ProcInfo.SendSignal(vm.WorkerPid, ProcInfo.SIGKILL);
            for (int i = 0; i < 250 && ProcInfo.IsAlive(vm.WorkerPid); i++) await Task.Delay(20);
            Assert.False(ProcInfo.IsAlive(vm.WorkerPid));
            Directory.Delete(Path.Combine(d.StateDir, "vms", "gone"), recursive: true);
        });
        Assert.False(Directory.Exists(jail));
        Assert.False(Directory.Exists(run));
        Assert.False(Directory.Exists(cgroup));
        d.AssertNothingLeft();
    }

    private static int ParentPid(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static string Ns(string pid, string ns) => new FileInfo($"/proc/{pid}/ns/{ns}").LinkTarget ?? throw new InvalidOperationException($"no {ns} namespace link for {pid}");

    /// <summary>A 1 MiB drive image only root may open (mode 0600).</summary>
    private static string Drive(DaemonUnderTest d, string name)
    {
        string path = Path.Combine(d.StateDir, name);
        File.WriteAllBytes(path, new byte[1 << 20]);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    private static VmSpec WithDrive(VmSpec spec, string path)
    {
        spec.Drives.Add(new DriveSpec { Id = "data", Path = path });
        return spec;
    }

    /// <summary>Runs `sh -c script` as the given uid/gid (no groups, via setpriv), or as root; returns its exit code.</summary>
    private static async Task<int> ShAsUidAsync((uint Uid, uint Gid)? as_, string script)
    {
        var psi = new ProcessStartInfo(as_ is null ? "/bin/sh" : "/usr/bin/setpriv") { UseShellExecute = false, RedirectStandardError = true };
        if (as_ is { } who)
            foreach (var a in (string[])[$"--reuid={who.Uid}", $"--regid={who.Gid}", "--clear-groups", "--", "/bin/sh"]) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        _ = await p.StandardError.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        return p.ExitCode;
    }
}

/// <summary>
/// <c>firesharp run --jail</c> (and <c>--worker</c>, the same path unjailed): a guest boots and a snapshot restores
/// in a worker started through a private daemon core; the jailed one runs as a non-root uid; nothing is left behind.
/// </summary>
[Collection("kvm")]
public sealed class RunJailCliTests
{
    [SkippableTheory]
    [InlineData("--jail")]
    [InlineData("--worker")]
    public async Task Run_boots_a_guest_in_a_worker_and_cleans_up(string mode)
    {
        KvmTestSupport.RequireKvm();
        var before = RunDirs();
        var (code, stdout, stderr) = await DaemonUnderTest.RunCliAsync(["run", mode, "--kernel", TestPaths.Guest("hello"), "--mem-mib", "16"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("Hello from FireSharp tiny guest", stdout, StringComparison.Ordinal);
        Assert.Contains($"jailed {mode == "--jail"}", stderr, StringComparison.Ordinal);
        Assert.Equal(before, RunDirs());
    }

    [SkippableFact]
    public async Task Run_jail_restores_a_snapshot_and_stops_it_after_exit_after_ms()
    {
        KvmTestSupport.RequireKvm();
        string snap = Path.Combine("/tmp", "fs-runjail-" + Guid.NewGuid().ToString("N")[..8]);
        string keys = snap + "-keys";
        try
        {
            FireSharp.Snapshot.SnapshotKeys.OpenOrCreate(keys);
            var (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["run", "--kernel", TestPaths.Guest("counter"), "--mem-mib", "16",
                "--snapshot-dir", snap, "--snapshot-after-ms", "50", "--snapshot-exit", "--snapshot-key", keys]);
            Assert.True(code == 0, stderr);
            // A worker restores only an authenticated snapshot: --jail --restore needs the key.
            (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["run", "--jail", "--restore", snap, "--exit-after-ms", "100"]);
            Assert.NotEqual(0, code);
            Assert.Contains("--snapshot-key", stderr, StringComparison.Ordinal);
            (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["run", "--jail", "--restore", snap, "--snapshot-key", keys, "--exit-after-ms", "100", "--log-level", "Information"]);
            Assert.True(code == 0, stderr);
            Assert.Contains("jailed True", stderr, StringComparison.Ordinal);
            Assert.Contains("restored ", stderr, StringComparison.Ordinal); // the jailed worker's own log, copied to stderr
            // Another key: refused with the typed error, by the private daemon core before a worker starts.
            string other = snap + "-other";
            FireSharp.Snapshot.SnapshotKeys.OpenOrCreate(other);
            (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["run", "--jail", "--restore", snap, "--snapshot-key", other, "--exit-after-ms", "100"]);
            if (Directory.Exists(other)) Directory.Delete(other, recursive: true);
            Assert.NotEqual(0, code);
            Assert.Contains("not one of this host's snapshot keys", stderr, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(snap)) Directory.Delete(snap, recursive: true);
            if (Directory.Exists(keys)) Directory.Delete(keys, recursive: true);
        }
    }

    private static List<string> RunDirs() => [.. Directory.GetDirectories("/tmp", "firesharp-run-*").Order(StringComparer.Ordinal)];
}
