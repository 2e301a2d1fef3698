using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using FireSharp.Daemon;
using FireSharp.Daemon.Workers;
using FireSharp.Worker.Protocol;
using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Api;

/// <summary>
/// The real thing: build/firesharp serve (NativeAOT, from `make build`) with one `firesharp-vmm` process per
/// VM, driven over its Unix socket. After each test nothing may be left: no worker process, no socket, no
/// VM directory, no daemon fd into the state directory.
/// </summary>
[Collection("kvm")]
public sealed class DaemonProcessTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Readiness_is_reported_on_notify_socket_after_the_daemon_can_serve()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        Assert.Contains("READY=1", d.Notifications);
        // READY came after the socket was bound and given its mode.
        var mode = OperatingSystem.IsWindows() ? default : File.GetUnixFileMode(d.Socket);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite, mode);
        Assert.Empty((await d.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        int code = await d.TerminateAsync();
        Assert.Equal(0, code);
        Assert.Contains("STOPPING=1", d.Notifications);
        Assert.False(File.Exists(d.Socket));
    }

    [SkippableFact]
    public async Task An_invalid_configuration_exits_2_without_readiness()
    {
        KvmTestSupport.RequireKvm();
        var (code, _, stderr) = await DaemonUnderTest.RunCliAsync(["serve", "--StateDir=relative/dir"]);
        Assert.Equal(2, code);
        Assert.Contains("StateDir", stderr);
    }

    [SkippableFact]
    public async Task Create_start_console_stop_delete_through_the_unix_socket_and_the_cli()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "one", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.NotEqual(Environment.ProcessId, vm.WorkerPid);
        Assert.True(ProcInfo.IsAlive(vm.WorkerPid));
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("one", "COUNTING"));
        var stopped = await d.Client.StopVmAsync(new StopVmRequest { Id = "one", GracePeriodSeconds = 1 });
        Assert.Equal(VmState.Stopped, stopped.State);
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "one" });
        Assert.False(ProcInfo.IsAlive(vm.WorkerPid));
        d.AssertNothingLeft();

        // The same through the command-line client, with JSON output.
        string guest = TestPaths.Guest("hello");
        var (code, json, _) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "--json", "create", "cli", "--kernel", guest, "--mem-mib", "16", "--label", "via=cli", "--start"]);
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(json)) Assert.Equal("cli", doc.RootElement.GetProperty("id").GetString());
        await d.WaitForStateAsync("cli", VmState.Stopped);
        (code, json, _) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "--json", "ls", "--label", "via=cli"]);
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(json))
        {
            var only = Assert.Single(doc.RootElement.GetProperty("items").EnumerateArray());
            Assert.Equal("VM_STATE_STOPPED", only.GetProperty("state").GetString());
            Assert.Equal("EXIT_KIND_RESET", only.GetProperty("exit").GetProperty("kind").GetString());
        }
        (code, var table, _) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "ls"]);
        Assert.Equal(0, code);
        Assert.Contains("cli", table);
        var (notFound, _, err) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "get", "nope"]);
        Assert.Equal(4, notFound);
        Assert.Contains("nope", err);
        (code, _, _) = await DaemonUnderTest.RunCliAsync(["vm", "--socket", d.Socket, "rm", "cli"]);
        Assert.Equal(0, code);
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task Twenty_vms_at_once()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var ids = Enumerable.Range(0, 20).Select(i => $"many-{i:D2}").ToList();
        var created = await Task.WhenAll(ids.Select(id => d.Client.CreateVmAsync(new CreateVmRequest { Id = id, Spec = ApiTestServer.Spec("counter"), Start = true }).ResponseAsync));
        Assert.Equal(20, created.Select(v => v.WorkerPid).Distinct().Count());
        var list = await d.Client.ListVmsAsync(new ListVmsRequest { States = { VmState.Running } });
        Assert.Equal(ids, list.Vms.Select(v => v.Id));
        foreach (var id in ids) Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync(id, "COUNTING"));
        await Task.WhenAll(ids.Select(id => d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true }).ResponseAsync));
        Assert.All(created, v => Assert.False(ProcInfo.IsAlive(v.WorkerPid)));
        d.AssertNothingLeft();
    }

    /// <remarks>
    /// Jailed (the default as root), the daemon's child is unshare(1), which util-linux 2.38 ends with status 1 when
    /// its child is SIGKILLed: the reason then names the worker's pid instead of the signal. Unjailed, the signal.
    /// </remarks>
    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Kill_9_of_a_worker_fails_the_vm(bool jailed)
    {
        await using var d = await DaemonUnderTest.StartAsync(output, jailed ? [] : ["--Jail=false"]);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "victim", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.Equal(jailed, !File.ReadAllText($"/proc/{vm.WorkerPid}/status").Contains("Uid:\t0\t", StringComparison.Ordinal));
        ProcInfo.SendSignal(vm.WorkerPid, ProcInfo.SIGKILL);
        var failed = await d.WaitForStateAsync("victim", VmState.Failed);
        Assert.Equal(ExitKind.WorkerDied, failed.Exit.Kind);
        Assert.Contains(jailed ? $"worker process {vm.WorkerPid} " : "signal 9", failed.Exit.Reason);
        Assert.Equal(0, failed.WorkerPid);
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "victim" });
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task Kill_9_and_restart_of_the_daemon_keeps_live_vms_controllable()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var a = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "a", Spec = ApiTestServer.Spec("counter"), Start = true });
        var b = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "b", Spec = ApiTestServer.Spec("counter"), Start = true });
        await d.Client.CreateVmAsync(new CreateVmRequest { Id = "c", Spec = ApiTestServer.Spec("hello") });
        await d.Client.PauseVmAsync(new PauseVmRequest { Id = "b" });

        await d.KillAndRestartAsync();

        var vms = (await d.Client.ListVmsAsync(new ListVmsRequest())).Vms.ToDictionary(v => v.Id);
        Assert.Equal(VmState.Running, vms["a"].State);
        Assert.Equal(a.WorkerPid, vms["a"].WorkerPid);
        Assert.Equal(VmState.Paused, vms["b"].State);
        Assert.Equal(b.WorkerPid, vms["b"].WorkerPid);
        Assert.Equal(VmState.Created, vms["c"].State);
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("a", "COUNTING"));
        Assert.Equal(VmState.Running, (await d.Client.ResumeVmAsync(new ResumeVmRequest { Id = "b" })).State);
        Assert.Equal(VmState.Paused, (await d.Client.PauseVmAsync(new PauseVmRequest { Id = "a" })).State);
        Assert.Equal(VmState.Stopped, (await d.Client.StopVmAsync(new StopVmRequest { Id = "a", Force = true })).State);
        // The created-but-never-started VM starts in its adopted worker (hello.elf may already have reset).
        Assert.Contains((await d.Client.StartVmAsync(new StartVmRequest { Id = "c" })).State, new[] { VmState.Running, VmState.Stopped });
        Assert.Equal(ExitKind.Reset, (await d.WaitForStateAsync("c", VmState.Stopped)).Exit.Kind);

        // An adopted worker that dies is noticed too.
        ProcInfo.SendSignal(b.WorkerPid, ProcInfo.SIGKILL);
        var failed = await d.WaitForStateAsync("b", VmState.Failed);
        Assert.Equal(ExitKind.WorkerDied, failed.Exit.Kind);

        foreach (var id in new[] { "a", "b", "c" }) await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
        d.AssertNothingLeft();
    }
}

/// <summary>A `firesharp serve` process on a temporary state directory, with a fake NOTIFY_SOCKET.</summary>
internal sealed class DaemonUnderTest : IAsyncDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly Socket _notify;
    private readonly List<string> _notifications = [];
    private Process? _process;
    private GrpcChannel? _channel;

    private DaemonUnderTest(ITestOutputHelper output, string stateDir)
    {
        _output = output;
        StateDir = stateDir;
        Socket = Path.Combine(stateDir, "api.sock");
        NotifyPath = Path.Combine(stateDir, "notify.sock");
        _notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        _notify.Bind(new UnixDomainSocketEndPoint(NotifyPath));
        _ = Task.Run(ReceiveNotificationsAsync);
    }

    public static string Binary
    {
        get
        {
            // FIRESHARP_BIN: another build of the binary (default: build/firesharp from `make build`).
            string path = Environment.GetEnvironmentVariable("FIRESHARP_BIN") is { Length: > 0 } bin ? Path.GetFullPath(bin) : Path.Combine(TestPaths.RepoRoot, "build", "firesharp");
            if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing: run `make build` (make test does)", path);
            return path;
        }
    }

    public string StateDir { get; }

    /// <summary>The daemon's pid (the launch prefix's, which execs it).</summary>
    public int DaemonPid => _process?.Id ?? throw new InvalidOperationException("the daemon is not running");

    /// <summary>This daemon's parent cgroup (one per daemon, so parallel tests never reap each other's VMs' cgroups); removed on dispose.</summary>
    public string CgroupParent { get; } = Isolation.CgroupTestSupport.UniqueParent();
    public string Socket { get; }
    public string NotifyPath { get; }
    public VmService.VmServiceClient Client { get; private set; } = null!;

    /// <summary>The channel to the daemon's socket, for the other services (functions).</summary>
    public GrpcChannel Channel => _channel ?? throw new InvalidOperationException("the daemon is not running");
    public IReadOnlyList<string> Notifications { get { lock (_notifications) return [.. _notifications]; } }

    private string VmsDir => Path.Combine(StateDir, "vms");

    /// <summary>Extra --Key=value settings, and the umask the daemon starts under (null: the test's own).</summary>
    public IReadOnlyList<string> Settings { get; init; } = [];
    public string? Umask { get; init; }

    /// <summary>A command that execs the rest (such as <c>nsenter --net=/var/run/netns/NS</c>, so the daemon and its workers see that namespace's taps).</summary>
    public IReadOnlyList<string> LaunchPrefix { get; init; } = [];

    /// <summary>Starts the daemon through <paramref name="launchPrefix"/>; <paramref name="extraArgs"/> are more <c>--Key=value</c> settings.</summary>
    public static Task<DaemonUnderTest> StartWithPrefixAsync(ITestOutputHelper output, string[] launchPrefix, params string[] extraArgs) =>
        StartAsync(output, extraArgs, launchPrefix: launchPrefix);

    public static async Task<DaemonUnderTest> StartAsync(ITestOutputHelper output, IReadOnlyList<string>? settings = null, string? umask = null, string? stateDir = null,
        IReadOnlyList<string>? launchPrefix = null)
    {
        KvmTestSupport.RequireKvm();
        _ = Binary;
        var d = new DaemonUnderTest(output, stateDir ?? ApiTestServer.NewStateDir()) { Settings = settings ?? [], Umask = umask, LaunchPrefix = launchPrefix ?? [] };
        try
        {
            await d.LaunchAsync();
            return d;
        }
        catch
        {
            await d.DisposeAsync();
            throw;
        }
    }

    private async Task LaunchAsync()
    {
        // Under another umask: a shell sets it and execs the daemon.
        string[] launch = Umask is null ? [.. LaunchPrefix, Binary] : [.. LaunchPrefix, "/bin/sh", "-c", $"umask {Umask} && exec \"$0\" \"$@\"", Binary];
        var psi = new ProcessStartInfo(launch[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in launch.Skip(1)) psi.ArgumentList.Add(a);
        // No metrics listener unless the test sets MetricsListen: daemons of parallel tests cannot share its port.
        string[] metrics = Settings.Any(a => a.StartsWith("--MetricsListen=", StringComparison.Ordinal)) ? [] : ["--MetricsListen=off"];
        foreach (var a in (string[])["serve", $"--Socket={Socket}", $"--StateDir={StateDir}", "--LogLevel=Debug", "--DefaultStopGraceSeconds=2", $"--CgroupParent={CgroupParent}", "--AllowedPathRoots=/", .. metrics, .. Settings]) psi.ArgumentList.Add(a);
        psi.Environment["NOTIFY_SOCKET"] = NotifyPath;
        psi.Environment.Remove("INVOCATION_ID");
        psi.Environment.Remove("JOURNAL_STREAM");
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, e) => Log(e.Data);
        _process.ErrorDataReceived += (_, e) => Log(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        // READY=1 on the notify socket means the daemon probed KVM, loaded its state and listens.
        var exited = _process.WaitForExitAsync();
        var ready = _ready.WaitAsync(TimeSpan.FromSeconds(60));
        if (await Task.WhenAny(ready, exited) == exited)
            throw new InvalidOperationException($"the daemon exited with {_process.ExitCode} before READY=1");
        if (!await ready) throw new TimeoutException("no READY=1 from the daemon within 60 s");
        _channel = DaemonChannel.ForUnixSocket(Socket);
        Client = new VmService.VmServiceClient(_channel);
    }

    private readonly SemaphoreSlim _ready = new(0);

    private async Task ReceiveNotificationsAsync()
    {
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                int n = await _notify.ReceiveAsync(buffer, SocketFlags.None);
                string message = Encoding.UTF8.GetString(buffer, 0, n);
                lock (_notifications) _notifications.Add(message);
                if (message.Contains("READY=1", StringComparison.Ordinal)) _ready.Release();
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    private void Log(string? line)
    {
        if (line is null) return;
        try { _output.WriteLine("daemon: " + line); }
        catch (InvalidOperationException) { }
    }

    /// <summary>
    /// SIGKILL the daemon (its workers live on), run <paramref name="whileDown"/> if given, then start a new one on
    /// the same state directory.
    /// </summary>
    public async Task KillAndRestartAsync(Func<Task>? whileDown = null)
    {
        _channel?.Dispose();
        _process!.Kill();
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        _process.Dispose();
        if (whileDown is not null) await whileDown().WaitAsync(TimeSpan.FromSeconds(60));
        await LaunchAsync();
    }

    /// <summary>SIGTERM, as systemd stops the service; returns the exit code.</summary>
    public async Task<int> TerminateAsync()
    {
        _channel?.Dispose();
        ProcInfo.SendSignal(_process!.Id, ProcInfo.SIGTERM);
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await Task.Delay(50); // the last notification may still be in flight to the receive loop
        return _process.ExitCode;
    }

    public Task<FireSharp.Proto.V1.Vm> WaitForStateAsync(string id, VmState state) => Client.WaitForStateAsync(id, state);

    /// <summary>Reads the console (with replay) until <paramref name="text"/> appears (fails after 60 s).</summary>
    public Task<string> ReadConsoleUntilAsync(string id, string text) => Client.ReadConsoleUntilAsync(id, text);

    /// <summary>No live worker (or jail wrapper) of this daemon, no VM, jail or run directory, worker socket or VM cgroup, no daemon fd into vms/.</summary>
    public void AssertNothingLeft()
    {
        Assert.Empty(WorkerPids(includeJailWrappers: true));
        Assert.Empty(FireSharp.Daemon.Isolation.CgroupHierarchy.Detect(Isolation.CgroupTestSupport.Root, CgroupParent)?.Children() ?? []);
        Assert.Empty(Directory.GetFileSystemEntries(VmsDir));
        foreach (var sub in new[] { "jail", "run" })
            if (Directory.Exists(Path.Combine(StateDir, sub))) Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(StateDir, sub)));
        Assert.DoesNotContain(Directory.GetFiles(StateDir, "*.sock", SearchOption.AllDirectories), f => f != Socket && f != NotifyPath);
        if (_process is { HasExited: false } p)
        {
            var open = Directory.GetFiles($"/proc/{p.Id}/fd").Select(f => { try { return File.ResolveLinkTarget(f, false)?.FullName ?? ""; } catch (IOException) { return ""; } })
                .Where(t => t.StartsWith(VmsDir, StringComparison.Ordinal)).ToList();
            Assert.Empty(open);
        }
    }

    /// <summary>
    /// Live (not zombie) `firesharp-vmm` processes whose socket is under this state directory; with
    /// <paramref name="includeJailWrappers"/> also the unshare(1) processes that jailed ones run under.
    /// </summary>
    public List<int> WorkerPids(bool includeJailWrappers = false)
    {
        var pids = new List<int>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string cmdline;
            try { cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' '); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (!includeJailWrappers && cmdline.StartsWith("unshare ", StringComparison.Ordinal)) continue;
            if (cmdline.Contains("firesharp-vmm ", StringComparison.Ordinal) && cmdline.Contains(StateDir, StringComparison.Ordinal) && ProcInfo.IsAlive(pid))
                pids.Add(pid);
        }
        return pids;
    }

    /// <summary>Runs build/firesharp with arguments; returns (exit code, stdout, stderr).</summary>
    public static async Task<(int Code, string Stdout, string Stderr)> RunCliAsync(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        return (p.ExitCode, await stdout, await stderr);
    }

    public async ValueTask DisposeAsync()
    {
        _channel?.Dispose();
        foreach (int pid in WorkerPids()) ProcInfo.SendSignal(pid, ProcInfo.SIGKILL);
        if (_process is { HasExited: false } p)
        {
            p.Kill();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
        _process?.Dispose();
        _notify.Dispose();
        Isolation.CgroupTestSupport.RemoveParent(Isolation.CgroupTestSupport.Root, CgroupParent);
        try { Directory.Delete(StateDir, recursive: true); }
        catch (IOException) { }
    }
}
