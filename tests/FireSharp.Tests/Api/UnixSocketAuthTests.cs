using System.Diagnostics;
using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// The Unix socket's trust boundary: the kernel's record of each connecting process (SO_PEERCRED) is checked
/// against the allowed users and groups, the socket is never reachable by others before its mode is set, and
/// the daemon's directories are private whatever the umask. Peers are played by curl (HTTP/2 over the socket,
/// gRPC framed by hand) and python3 run as uid nobody through setpriv.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class UnixSocketAuthTests(ITestOutputHelper output)
{
    private const UnixFileMode Rwx = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private static string[] OverSocket(string socket) => ["--http2-prior-knowledge", "--unix-socket", socket];

    [SkippableFact]
    public async Task A_peer_uid_that_is_not_allowed_gets_permission_denied_and_an_allowed_one_gets_through()
    {
        // The socket's mode lets anyone connect (0666): only the SO_PEERCRED check stands between nobody and the API.
        const UnixFileMode everyone = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
        await using (var s = await ApiTestServer.StartAsync(output, o => o with { SocketMode = everyone }))
        {
            File.SetUnixFileMode(s.Options.StateDir, Rwx | UnixFileMode.OtherExecute); // let nobody reach the socket's directory
            var denied = await ExternalClients.CurlGrpcAsync("http://localhost", "/firesharp.v1.VmService/ListVms", OverSocket(s.Options.Socket), asUser: "nobody", asGroup: "nogroup");
            output.WriteLine(denied.Output);
            Assert.Equal((int)StatusCode.PermissionDenied, denied.GrpcStatus);
            Assert.Contains("uid 65534", denied.GrpcMessage);
            // root (this process) through curl and through the project's client.
            var root = await ExternalClients.CurlGrpcAsync("http://localhost", "/firesharp.v1.VmService/ListVms", OverSocket(s.Options.Socket));
            Assert.Equal(0, root.GrpcStatus);
            Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        }

        await using (var s = await ApiTestServer.StartAsync(output, o => o with { SocketMode = everyone, SocketAllowedUids = [65534] }))
        {
            File.SetUnixFileMode(s.Options.StateDir, Rwx | UnixFileMode.OtherExecute);
            var allowed = await ExternalClients.CurlGrpcAsync("http://localhost", "/firesharp.v1.VmService/ListVms", OverSocket(s.Options.Socket), asUser: "nobody", asGroup: "nogroup");
            output.WriteLine(allowed.Output);
            Assert.Equal(0, allowed.GrpcStatus);
        }

        // Allowed by group (nogroup is nobody's primary group here).
        await using (var s = await ApiTestServer.StartAsync(output, o => o with { SocketMode = everyone, SocketAllowedGids = [65534] }))
        {
            File.SetUnixFileMode(s.Options.StateDir, Rwx | UnixFileMode.OtherExecute);
            var allowed = await ExternalClients.CurlGrpcAsync("http://localhost", "/firesharp.v1.VmService/ListVms", OverSocket(s.Options.Socket), asUser: "nobody", asGroup: "nogroup");
            Assert.Equal(0, allowed.GrpcStatus);
        }
    }

    [SkippableFact]
    public async Task Missing_state_and_runtime_directories_are_created_private_and_the_socket_published_with_its_mode_and_group()
    {
        string root = ApiTestServer.NewStateDir();
        try
        {
            string state = Path.Combine(root, "state"), run = Path.Combine(root, "run");
            await using (var s = await ApiTestServer.StartAsync(output, o => o with { StateDir = state, Socket = Path.Combine(run, "api.sock") }, stateDir: state))
            {
                Assert.Equal(Rwx, File.GetUnixFileMode(state));
                Assert.Equal(Rwx, File.GetUnixFileMode(run));
                Assert.Equal(s.Options.SocketMode, File.GetUnixFileMode(s.Options.Socket));
                Assert.Equal(["api.sock"], Directory.GetFileSystemEntries(run).Select(Path.GetFileName)); // no staging directory left
                Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest())).Vms);
            }
            Directory.Delete(run, recursive: true);

            // With SocketGroup: the runtime directory is 0750 and the group's, and so is the socket.
            string grouped = Path.Combine(root, "run2");
            await using (var s = await ApiTestServer.StartAsync(output, o => o with { StateDir = state, Socket = Path.Combine(grouped, "api.sock"), SocketGroup = "nogroup" }, stateDir: state))
            {
                Assert.Equal(Rwx | UnixFileMode.GroupRead | UnixFileMode.GroupExecute, File.GetUnixFileMode(grouped));
                Assert.Equal(65534, await GroupOfAsync(grouped));
                Assert.Equal(65534, await GroupOfAsync(s.Options.Socket));
            }
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// The check: a process of uid nobody polls connect() from before the daemon binds until after it is
    /// ready, with the daemon started under umask 000; it never connects. The same poller as root does connect, and
    /// nobody's attempts end in EACCES once the socket exists (so the poller saw the socket and was refused).
    /// </summary>
    [SkippableFact]
    public async Task Nobody_polling_from_before_the_bind_under_umask_000_never_connects()
    {
        KvmTestSupport.RequireKvm();
        string probe = Path.Combine(Path.GetTempPath(), "fs-poll-" + Guid.NewGuid().ToString("N")[..8] + ".py");
        string stop = probe + ".stop";
        await File.WriteAllTextAsync(probe, """
            import errno, os, socket, sys, time
            paths, stop = sys.argv[1:-1], sys.argv[-1]
            seen = {}
            print("polling", flush=True)
            deadline = time.time() + 120
            while not os.path.exists(stop) and time.time() < deadline:
                for p in paths:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(p)
                        print("CONNECTED", p, flush=True)
                        sys.exit(3)
                    except OSError as e:
                        name = errno.errorcode.get(e.errno, str(e.errno))
                        seen[name] = seen.get(name, 0) + 1
                    finally:
                        s.close()
            print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())), flush=True)
            """);
        try
        {
            // The socket's directory exists and lets nobody in (0755, like /run): only the socket itself can keep nobody out.
            string stateDir = ApiTestServer.NewStateDir();
            File.SetUnixFileMode(stateDir, Rwx | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            string socket = Path.Combine(stateDir, "api.sock"), staging = Path.Combine(stateDir, ".api.sock.bind", "s");
            var psi = new ProcessStartInfo("/usr/bin/setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in ExternalClients.AsUser("nobody", "nogroup", ["/usr/bin/python3", probe, socket, staging, stop])[1..]) psi.ArgumentList.Add(a);
            using var poller = Process.Start(psi)!;
            var pollerOut = poller.StandardOutput.ReadToEndAsync();
            var pollerErr = poller.StandardError.ReadToEndAsync();
            await Task.Delay(300); // let it start polling (it prints "polling" first; its output is read at the end)

            await using var d = await DaemonUnderTestAt(stateDir);
            Assert.True(File.Exists(socket));
            Assert.Empty((await d.Client.ListVmsAsync(new ListVmsRequest())).Vms); // the daemon serves
            await Task.Delay(500); // nobody keeps trying against the live socket
            await File.WriteAllTextAsync(stop, "");
            await poller.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            string result = await pollerOut, err = await pollerErr;
            output.WriteLine($"poller (nobody): exit {poller.ExitCode}: {result} {err}");
            Assert.StartsWith("polling", result);
            Assert.DoesNotContain("CONNECTED", result);
            Assert.Equal(0, poller.ExitCode);
            Assert.Contains("EACCES=", result);

            // The same poller as root connects at once: it would have seen an open socket.
            File.Delete(stop);
            var rootRun = await ExternalClients.RunAsync(["/usr/bin/python3", probe, socket, stop], TimeSpan.FromSeconds(30));
            Assert.Equal(3, rootRun.Code);
            Assert.Contains("CONNECTED", rootRun.Stdout);
        }
        finally
        {
            File.Delete(probe);
            File.Delete(stop);
        }
    }

    private async Task<DaemonUnderTest> DaemonUnderTestAt(string stateDir) =>
        await DaemonUnderTest.StartAsync(output, umask: "000", stateDir: stateDir);

    private static async Task<int> GroupOfAsync(string path)
    {
        var (code, stdout, _) = await ExternalClients.RunAsync(["/usr/bin/stat", "-c", "%g", path]);
        Assert.Equal(0, code);
        return int.Parse(stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
