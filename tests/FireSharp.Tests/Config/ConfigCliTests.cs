using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Xunit.Abstractions;

namespace FireSharp.Tests.Config;

/// <summary>
/// The real binary (build/firesharp): <c>firesharp config check/show</c>, <c>serve</c> refusing a bad configuration
/// with one line per problem, the daemon serving on a socket passed by systemd (socket activation), and the daemon
/// with its jailed VMs working within the unit's capability bounding set.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ConfigCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ApiTestServer.NewStateDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }

    private static async Task<(int Code, string Stdout, string Stderr)> CliAsync(IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(DaemonUnderTest.Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return (p.ExitCode, await stdout, await stderr);
    }

    private string Json(string text)
    {
        string file = Path.Combine(_dir, Guid.NewGuid().ToString("N")[..6] + ".json");
        File.WriteAllText(file, text);
        return file;
    }

    [Fact]
    public async Task Config_check_exits_0_for_a_good_config_and_2_listing_each_problem()
    {
        string good = Json("""{ "MaxVms": 5, "StateDir": "/srv/fs" }""");
        // The test's own FIRESHARP_REQUIRE_KVM (not a setting, nor near one) is ignored.
        var (code, stdout, stderr) = await CliAsync(["config", "check", "--config", good], new Dictionary<string, string> { ["FIRESHARP_REQUIRE_KVM"] = "1" });
        Assert.True(code == 0, stderr);
        Assert.Contains("configuration OK (file " + good, stdout);

        string bad = Json("""{ "MaxVm": 5, "LogLevel": "Chatty", "SocketMode": "rw" }""");
        (code, _, stderr) = await CliAsync(["config", "check", "--config", bad]);
        Assert.Equal(2, code);
        Assert.Contains($"firesharp config check: unknown setting MaxVm in file {bad} (did you mean MaxVms?)", stderr);

        (code, _, stderr) = await CliAsync(["config", "check", "--config", good, "--MaxVm=5"]);
        Assert.Equal(2, code);
        Assert.Equal("firesharp config check: unknown setting --MaxVm (did you mean --MaxVms?)", stderr.Trim());

        (code, _, stderr) = await CliAsync(["config", "check", "--config", good], new Dictionary<string, string> { ["FIRESHARP_MAXVM"] = "5" });
        Assert.Equal(2, code);
        Assert.Contains("unknown setting FIRESHARP_MAXVM (did you mean FIRESHARP_MAXVMS?)", stderr);

        (code, _, stderr) = await CliAsync(["config", "check", "--config", good, "--LogLevel=Chatty", "--SocketMode=rw", "--MaxVms=0"]);
        Assert.Equal(2, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.Contains(lines, l => l.StartsWith("firesharp config check: LogLevel='Chatty'", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("firesharp config check: SocketMode='rw'", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("firesharp config check: MaxVms='0'", StringComparison.Ordinal));

        (code, _, stderr) = await CliAsync(["config", "check", "--config", Path.Combine(_dir, "absent.json")]);
        Assert.Equal(2, code);
        Assert.Contains("does not exist", stderr);
    }

    [Fact]
    public async Task Config_show_gives_every_key_its_value_and_source_as_json_or_a_table()
    {
        string file = Json("""{ "StateDir": "/srv/from-file", "MaxVms": 5 }""");
        var env = new Dictionary<string, string> { ["FIRESHARP_LOGLEVEL"] = "Debug" };
        var (code, stdout, stderr) = await CliAsync(["config", "show", "-o", "json", "--config", file, "--MaxVms=9"], env);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var items = doc.RootElement.GetProperty("items").EnumerateArray().ToDictionary(i => i.GetProperty("key").GetString()!);
        Assert.Equal(Daemon.Configuration.SettingKeys.All.Count, items.Count);
        Assert.Equal("9", items["MaxVms"].GetProperty("value").GetString());
        Assert.Equal("command line (--MaxVms)", items["MaxVms"].GetProperty("source").GetString());
        Assert.Equal("environment (FIRESHARP_LOGLEVEL)", items["LogLevel"].GetProperty("source").GetString());
        Assert.Equal("file " + file, items["StateDir"].GetProperty("source").GetString());
        Assert.Equal("default", items["Socket"].GetProperty("source").GetString());
        Assert.Equal(JsonValueKind.Null, items["TcpListen"].GetProperty("value").ValueKind);

        (code, stdout, _) = await CliAsync(["config", "show", "--config", file]);
        Assert.Equal(0, code);
        var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("KEY", rows[0]);
        Assert.Contains(rows, r => r.StartsWith("StateDir ", StringComparison.Ordinal) && r.Contains("/srv/from-file", StringComparison.Ordinal) && r.EndsWith("file " + file, StringComparison.Ordinal));
        Assert.All(rows, r => Assert.False(r.EndsWith(' '), "trailing space: " + r));

        (code, _, stderr) = await CliAsync(["config", "show", "--config", file, "--MaxVm=3"]);
        Assert.Equal(2, code);
        Assert.Contains("did you mean --MaxVms?", stderr);
    }

    [SkippableFact]
    public async Task Serve_refuses_a_bad_configuration_with_one_line_per_problem()
    {
        KvmTestSupport.RequireKvm();
        var (code, _, stderr) = await CliAsync(["serve", "--config", Json("{}"), $"--StateDir={_dir}", "--MaxVms=0", "--LogLevel=Chatty", "--MaxVm=3"]);
        Assert.Equal(2, code);
        Assert.Equal(["firesharp serve: invalid configuration: unknown setting --MaxVm (did you mean --MaxVms?)"],
            stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // unknown keys first: nothing else is read until they are fixed
        (code, _, stderr) = await CliAsync(["serve", "--config", Json("{}"), $"--StateDir={_dir}", "--MaxVms=0", "--LogLevel=Chatty"]);
        Assert.Equal(2, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.StartsWith("firesharp serve: invalid configuration: ", l));
    }

    /// <summary>
    /// systemd-socket-activate (the systemd package's launcher) binds the socket, and on the first connection execs the
    /// daemon with it as fd 3 (LISTEN_FDS=1, LISTEN_PID). The daemon serves on it: a daemon that bound its own would
    /// find the path answering and refuse to start ("another daemon is listening"). It leaves the socket, which is the
    /// launcher's, in place when it stops.
    /// </summary>
    [SkippableFact]
    public async Task The_daemon_serves_on_a_socket_passed_by_systemd()
    {
        KvmTestSupport.RequireKvm();
        string launcher = File.Exists("/usr/bin/systemd-socket-activate") ? "/usr/bin/systemd-socket-activate" : "/bin/systemd-socket-activate";
        Skip.IfNot(File.Exists(launcher), "systemd-socket-activate is not installed (Debian package systemd)");
        string sock = Path.Combine(_dir, "api.sock");
        // The launcher passes on only the variables named with -E.
        var start = DaemonUnderTest.StartAsync(output, stateDir: _dir,
            launchPrefix: [launcher, "-l", sock, "-E", "NOTIFY_SOCKET", "-E", "PATH"]);
        // The first connection makes the launcher exec the daemon.
        using var trigger = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        for (int i = 0; !File.Exists(sock); i++)
        {
            Assert.True(i < 600, "the launcher did not bind " + sock);
            await Task.Delay(50);
        }
        await trigger.ConnectAsync(new UnixDomainSocketEndPoint(sock));
        await using var d = await start;
        Assert.Contains("READY=1", d.Notifications);
        Assert.Empty((await d.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "sa", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("sa", "COUNTING"));
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "sa", Force = true });
        Assert.False(ProcInfo.IsAlive(vm.WorkerPid));
        Assert.Equal(0, await d.TerminateAsync());
        Assert.True(File.Exists(sock), "the daemon removed the launcher's socket");
        Assert.False(Directory.Exists(Path.Combine(_dir, ".api.sock.bind")), "the daemon staged a socket of its own");
    }

    /// <summary>
    /// The unit's CapabilityBoundingSet is enough: the real daemon, run under setpriv with exactly that bounding set,
    /// creates, runs and deletes a jailed VM (its own uid, namespaces, pivot_root, mknod'ed /dev/kvm, dropped privileges).
    /// </summary>
    [SkippableFact]
    public async Task A_jailed_vm_runs_within_the_units_capability_bounding_set()
    {
        KvmTestSupport.RequireKvm();
        Skip.IfNot(ProcInfo.EffectiveUserId == 0, "jailing needs root");
        string bounding = PackagingTests.BoundingSetForSetpriv();
        await using var d = await DaemonUnderTest.StartWithPrefixAsync(output, ["/usr/bin/setpriv", "--bounding-set", bounding, "--inh-caps=-all"]);
        var status = await File.ReadAllLinesAsync($"/proc/{d.DaemonPid}/status");
        string capBnd = status.Single(l => l.StartsWith("CapBnd:", StringComparison.Ordinal));
        Assert.NotEqual("CapBnd:\t000001ffffffffff", capBnd); // the daemon did run with a reduced set
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "caps", Spec = ApiTestServer.Spec("counter"), Start = true });
        Assert.Contains("COUNTING", await d.ReadConsoleUntilAsync("caps", "COUNTING"));
        string worker = await File.ReadAllTextAsync($"/proc/{vm.WorkerPid}/status");
        Assert.True(int.Parse(System.Text.RegularExpressions.Regex.Match(worker, @"Uid:\s+(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, worker); // jailed
        await d.Client.StopVmAsync(new StopVmRequest { Id = "caps", GracePeriodSeconds = 1 });
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "caps" });
        Assert.False(ProcInfo.IsAlive(vm.WorkerPid));
        d.AssertNothingLeft();
    }
}
