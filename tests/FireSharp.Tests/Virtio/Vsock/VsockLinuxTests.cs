using System.Diagnostics;
using System.Net.Sockets;
using FireSharp.Api.Agent;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Virtio.Vsock;

/// <summary>
/// Linux's virtio_vsock driver against the device, in one boot: the guest agent (copied into a private rootfs
/// copy with debugfs, started by the test script) connects to host CID 2 port 53, which the device forwards to
/// <c>PATH_53</c> (guest-initiated); then the host connects with <c>CONNECT 52</c> and pings it (host-initiated).
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class VsockLinuxTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(6);
    private const string Cmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd "
        + "firesharp.script=/vsock-test.sh firesharp.poweroff=1";

    private static void Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"{file} did not finish");
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}");
    }

    [SkippableFact]
    public void Linux_guest_agent_reports_ready_and_answers_a_ping_over_vsock()
    {
        KvmTestSupport.RequireKvm();
        string kernel = Path.Combine(TestPaths.RepoRoot, "build", "guest", "vmlinux");
        string baseRoot = Path.Combine(TestPaths.RepoRoot, "build", "guest", "rootfs.ext4");
        string agent = Environment.GetEnvironmentVariable("FIRESHARP_AGENT_BIN") is { Length: > 0 } a ? a
            : Path.Combine(TestPaths.RepoRoot, "build", "agent", "firesharp-agent");
        foreach (var f in new[] { kernel, baseRoot, agent })
            Skip.IfNot(File.Exists(f), $"{f} is missing (make kernel rootfs agent)");

        // On PVM hosts a guest process intermittently dies of SIGSEGV on a TLS read while the agent
        // starts (docs/pvm.md, open bug). Only a boot that shows that kernel message is retried.
        for (int attempt = 1; ; attempt++)
        {
            string dir = Path.Combine("/tmp", "fsvl-" + Guid.NewGuid().ToString("N")[..10]);
            Directory.CreateDirectory(dir);
            var console = new MemorySerialSink();
            try
            {
                BootAndCheck(kernel, baseRoot, agent, dir, console);
                return;
            }
            catch (Exception e) when (attempt < 3 && console.Contains("segfault at"))
            {
                output.WriteLine($"boot {attempt}: a guest process died of SIGSEGV (known PVM issue), retrying: {e.Message}");
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    private void BootAndCheck(string kernel, string baseRoot, string agent, string dir, MemorySerialSink console)
    {
        string root = Path.Combine(dir, "root.ext4");
        Run("cp", "--sparse=always", baseRoot, root);
        string script = Path.Combine(dir, "vsock-test.sh");
        File.WriteAllText(script, """
            chmod 755 /fs-agent
            echo T-VSOCK-DEV-$(ls /dev/vsock 2>/dev/null)
            /fs-agent < /dev/null > /dev/console 2>&1 &
            echo T-AGENT-STARTED
            sleep 900

            """);
        Run("debugfs", "-w", "-R", $"write {script} vsock-test.sh", root);
        Run("debugfs", "-w", "-R", $"write {agent} fs-agent", root);

        string uds = Path.Combine(dir, "vm.sock");
        using var ready = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        ready.Bind(new UnixDomainSocketEndPoint(VsockDeviceSpec.GuestInitiatedPath(uds, 53)));
        ready.Listen(4);

        using var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = kernel,
            Cmdline = Cmdline,
            MemoryMib = 256,
            Serial = console,
            Drives = [new DriveSpec { Path = root, IsRoot = true }],
            Vsock = new VsockDeviceSpec(3, uds),
        });
        vm.Start();
        try
        {
            // Guest-initiated: the agent's readiness report arrives at PATH_53.
            var sw = Stopwatch.StartNew();
            bool connected = false;
            while (!connected && sw.Elapsed < Timeout && !vm.Exited.IsCompleted) connected = ready.Poll(1_000_000, SelectMode.SelectRead);
            Assert.True(connected, $"no connection from the guest agent to CID 2 port 53; console tail:\n{Tail(console.GetText())}");
            using (var report = ready.Accept())
            {
                report.ReceiveTimeout = 60_000;
                var buf = new byte[4096];
                int total = 0, n;
                while ((n = report.Receive(buf)) > 0) total += n;
                Assert.True(total > 0, "the agent's ready report was empty");
            }

            // Host-initiated: CONNECT 52, OK, and a request/response through the stream.
            var client = AgentClient.ConnectHybridVsockAsync(uds).WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            var payload = new byte[20_000];
            new Random(7).NextBytes(payload);
            var reply = client.PingAsync(payload, cts.Token).GetAwaiter().GetResult();
            Assert.Equal(payload, reply.Payload.ToByteArray()); // 20 KB each way: several RW packets and credit

            // Round-trip latency of a small request through the whole path (informational, PVM-labelled).
            var samples = new List<double>();
            for (int i = 0; i < 50; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                client.PingAsync(new byte[8], cts.Token).GetAwaiter().GetResult();
                samples.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            }
            samples.Sort();
            output.WriteLine($"vsock agent Ping round trip (PVM host, 8-byte payload, 50 samples): p50 {samples[25]:F0} us, p90 {samples[45]:F0} us, max {samples[^1]:F0} us");
            client.DisposeAsync().AsTask().GetAwaiter().GetResult();
            Assert.Contains("T-AGENT-STARTED", console.GetText());
        }
        finally
        {
            if (!vm.Exited.IsCompleted) vm.Stop();
        }
    }

    private static string Tail(string text) => text.Length > 4000 ? text[^4000..] : text;
}
