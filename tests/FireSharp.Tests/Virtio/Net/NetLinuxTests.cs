using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Cli;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>
/// One real boot with a virtio-net interface. A network namespace holds a persistent tap with the host's
/// address; <c>firesharp run --net TAP,ip=...</c> runs inside it (<c>ip netns exec</c>), so nothing touches the
/// host's own network. Through the agent (vsock) the guest pings the host, and a TCP connection between a host
/// socket (made inside the namespace by a thread that entered it with setns) and busybox <c>nc -l</c> in the
/// guest moves random bytes both ways, checked by SHA-256. The binary is FIRESHARP_BIN, else build/firesharp.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public partial class NetLinuxTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const string HostIp = "172.31.99.1", GuestIp = "172.31.99.2";
    private const int Port = 5000, GuestToHostBytes = 256 * 1024, HostToGuestBytes = 256 * 1024;
    // Generous: a boot takes 1.5-2 min here alone, several times that when other VMs share the 2 cores.
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(20);
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(12);

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(int fd, int nstype);

    private const int CLONE_NEWNET = 0x40000000;

    [SkippableFact]
    public async Task Guest_pings_the_host_and_tcp_bytes_round_trip_through_a_tap_in_a_namespace()
    {
        KvmTestSupport.RequireKvm();
        string kernel = Path.Combine(TestPaths.RepoRoot, "build", "guest", "vmlinux");
        string baseRoot = Path.Combine(TestPaths.RepoRoot, "build", "guest", "rootfs.ext4");
        string binary = Environment.GetEnvironmentVariable("FIRESHARP_BIN") is { Length: > 0 } bin ? Path.GetFullPath(bin) : Path.Combine(TestPaths.RepoRoot, "build", "firesharp");
        foreach (var f in new[] { kernel, baseRoot, binary })
            TestEnvironment.RequireFile(f, "make kernel rootfs build, or FIRESHARP_BIN");
        TestEnvironment.Require(File.Exists("/dev/net/tun") && Run("ip", "-V").Code == 0, "/dev/net/tun or iproute2 is missing");

        string id = (Environment.ProcessId % 100000).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string ns = "fsnet" + id, tap = "fsnt" + id;
        string dir = Path.Combine("/tmp", "fsnl-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dir);
        Process? vmm = null;
        try
        {
            Run("ip", $"netns del {ns}"); // a leftover from an aborted run
            Check(Run("ip", $"netns add {ns}"));
            Check(Run("ip", $"netns exec {ns} ip tuntap add dev {tap} mode tap"));
            Check(Run("ip", $"netns exec {ns} ip addr add {HostIp}/24 dev {tap}"));
            Check(Run("ip", $"netns exec {ns} ip link set {tap} up"));

            using var cts = new CancellationTokenSource(Timeout);
            string cmdline = MicroVm.DefaultLinuxCmdline + " " + new AgentBootConfig().ToCmdline();
            string uds = "", console = "";
            FireSharp.Proto.Agent.Ready? report = null;
            AgentReadyListener? ready = null;
            for (int attempt = 1; attempt <= 3 && report is null; attempt++)
            {
                string sub = Path.Combine(dir, attempt.ToString(System.Globalization.CultureInfo.InvariantCulture));
                Directory.CreateDirectory(sub);
                string root = Path.Combine(sub, "root.ext4");
                File.Copy(baseRoot, root);
                new FileInfo(root).IsReadOnly = false;
                uds = Path.Combine(sub, "vm.sock");
                console = Path.Combine(sub, "console.txt");
                ready?.Dispose();
                ready = AgentReadyListener.Bind(HybridVsock.GuestInitiatedPath(uds, AgentProtocol.DefaultReadyPort));
                var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardInput = true };
                foreach (var a in new[] { "netns", "exec", ns, binary, "run", "--kernel", kernel, "--mem-mib", "256", "--cmdline", cmdline,
                    "--drive", root + ":root", "--vsock", uds, "--serial", console, "--net", $"{tap},ip={GuestIp}/24,gw={HostIp}", "--log-level", "Information" })
                    psi.ArgumentList.Add(a);
                vmm = Process.Start(psi)!;
                var stderr = vmm.StandardError.ReadToEndAsync(cts.Token);
                using var bootCts = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
                bootCts.CancelAfter(BootTimeout);
                var waitReady = ready.WaitAsync(bootCts.Token);
                var exited = vmm.WaitForExitAsync(bootCts.Token);
                await Task.WhenAny(waitReady, exited);
                if (waitReady.IsCompletedSuccessfully) report = await waitReady;
                else if (vmm.HasExited) output.WriteLine($"boot {attempt}: the VM ended ({vmm.ExitCode}) before the agent was ready: {await stderr}\nconsole:\n{Tail(console)}");
                else Assert.Fail($"boot {attempt}: no agent after {BootTimeout.TotalMinutes} min; console:\n{Tail(console)}");
            }
            using var readyListener = ready;
            Assert.True(report is not null, "the agent was never ready in 3 boots");

            // The guest reaches the host over the tap.
            var (code, text) = await ExecAsync(uds, $"ping -c 1 -W 20 {HostIp}", cts.Token);
            output.WriteLine(text);
            Assert.True(code == 0, $"ping from the guest failed ({code}): {text}\nconsole:\n{Tail(console)}");
            Assert.Contains("1 packets received", text);

            // TCP both ways: the guest's nc serves a random file and stores what it receives.
            (code, text) = await ExecAsync(uds, $"head -c {GuestToHostBytes} /dev/urandom > /tmp/out && sha256sum /tmp/out", cts.Token);
            Assert.True(code == 0, text);
            string guestOutHash = text.Split(' ')[0];
            (code, text) = await ExecAsync(uds, $"nc -l -p {Port} < /tmp/out > /tmp/in 2>/tmp/nc.err & echo listening", cts.Token);
            Assert.True(code == 0, text);

            var toGuest = RandomNumberGenerator.GetBytes(HostToGuestBytes);
            var sw = Stopwatch.StartNew();
            using var socket = await ConnectInNamespaceAsync(ns, new IPEndPoint(IPAddress.Parse(GuestIp), Port), cts.Token);
            var sending = Task.Run(async () => await socket.SendAsync(toGuest, SocketFlags.None, cts.Token), cts.Token);
            var received = new byte[GuestToHostBytes];
            int got = 0;
            while (got < received.Length)
            {
                int n = await socket.ReceiveAsync(received.AsMemory(got), SocketFlags.None, cts.Token);
                Assert.True(n > 0, $"the guest closed the connection after {got} of {received.Length} bytes");
                got += n;
            }
            await sending;
            double seconds = sw.Elapsed.TotalSeconds;
            socket.Shutdown(SocketShutdown.Send); // nc sees EOF and exits
            output.WriteLine($"PVM: {HostToGuestBytes + GuestToHostBytes} bytes over TCP both ways in {seconds:F2} s ({(HostToGuestBytes + GuestToHostBytes) / seconds / 1024:F0} KiB/s, "
                + "guest kernel networking emulated by PVM; not a hardware figure)");
            Assert.Equal(guestOutHash, Convert.ToHexStringLower(SHA256.HashData(received)));

            string want = Convert.ToHexStringLower(SHA256.HashData(toGuest));
            string guestInHash = "";
            for (int i = 0; i < 30 && guestInHash != want; i++)
            {
                (code, text) = await ExecAsync(uds, "sha256sum /tmp/in", cts.Token);
                guestInHash = text.Split(' ')[0];
                if (guestInHash != want) await Task.Delay(1000, cts.Token);
            }
            Assert.Equal(want, guestInHash);

            await using (var client = await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: cts.Token))
                await client.ShutdownAsync(FireSharp.Proto.Agent.ShutdownMode.Reboot, cts.Token);
            await vmm!.WaitForExitAsync(cts.Token).WaitAsync(TimeSpan.FromMinutes(2));
            Assert.Equal(RunCommand.ExitClean, vmm.ExitCode);
        }
        finally
        {
            if (vmm is { HasExited: false })
            {
                vmm.Kill(entireProcessTree: true);
                vmm.WaitForExit(10_000);
            }
            vmm?.Dispose();
            Run("ip", $"netns del {ns}"); // removes the tap with it
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
        Assert.False(File.Exists($"/var/run/netns/{ns}"), "the namespace was not removed");
    }

    /// <summary>Runs a shell command in the guest through the agent; retries the known PVM SIGSEGV (docs/pvm.md).</summary>
    private async Task<(int Code, string Output)> ExecAsync(string uds, string command, CancellationToken ct)
    {
        int code = 0;
        string text = "";
        for (int attempt = 0; attempt < 3; attempt++)
        {
            using var stdout = new MemoryStream();
            using var stderr = new MemoryStream();
            var diagnostics = new StringWriter();
            code = await AgentCommands.ExecAsync(uds, AgentProtocol.DefaultPort, ["sh", "-c", command], TimeSpan.FromSeconds(120), default, null,
                stdout, stderr, diagnostics, ct);
            text = Encoding.UTF8.GetString(stdout.ToArray()) + Encoding.UTF8.GetString(stderr.ToArray()) + diagnostics;
            if (code != 128 + 11) break;
            output.WriteLine($"'{command}' died of SIGSEGV in the guest (attempt {attempt + 1})");
        }
        return (code, text);
    }

    /// <summary>A TCP connection made from inside <paramref name="ns"/>: a thread enters it and creates the socket there (a socket keeps its namespace).</summary>
    private static async Task<Socket> ConnectInNamespaceAsync(string ns, IPEndPoint target, CancellationToken ct)
    {
        for (int attempt = 0; ; attempt++)
        {
            var tcs = new TaskCompletionSource<Socket>(TaskCreationOptions.RunContinuationsAsynchronously);
            var thread = new Thread(() =>
            {
                try
                {
                    using var handle = File.OpenHandle($"/var/run/netns/{ns}");
                    if (SetNs((int)handle.DangerousGetHandle(), CLONE_NEWNET) != 0)
                        throw new IOException($"setns: errno {Marshal.GetLastPInvokeError()}");
                    var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    try
                    {
                        s.Connect(target);
                        tcs.SetResult(s);
                    }
                    catch
                    {
                        s.Dispose();
                        throw;
                    }
                }
                catch (Exception e)
                {
                    tcs.SetException(e);
                }
            }) { IsBackground = true, Name = "netns-connect" };
            thread.Start();
            try
            {
                return await tcs.Task.WaitAsync(TimeSpan.FromSeconds(60), ct);
            }
            catch (SocketException) when (attempt < 20)
            {
                await Task.Delay(1000, ct); // nc not listening yet
            }
        }
    }

    private static void Check((int Code, string Output) r) => Assert.True(r.Code == 0, r.Output);

    private static (int Code, string Output) Run(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        string text = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, $"{file} {args}: {text}");
    }

    private static string Tail(string path)
    {
        try
        {
            string text = File.ReadAllText(path);
            return text.Length > 4000 ? text[^4000..] : text;
        }
        catch (IOException) { return "(no console file)"; }
    }
}
