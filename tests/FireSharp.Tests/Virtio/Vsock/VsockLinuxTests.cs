using System.Diagnostics;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Tests.Linux;

namespace FireSharp.Tests.Virtio.Vsock;

/// <summary>
/// Linux's virtio_vsock driver against the device, on a clone of the Linux fixture (<see cref="LinuxGuestFixture"/>:
/// booted once, its agent's ready report, a guest-initiated connection to CID 2 port 53, arrived before the
/// snapshot). After the restore (new host socket, transport reset): host-initiated, CONNECT 52 and pings through
/// the stream; guest-initiated, a second agent started in the guest reports ready to host port 55 (PATH_55).
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class VsockLinuxTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);

    [SkippableFact]
    public async Task Linux_guest_agent_answers_pings_and_connects_to_the_host_after_a_restore()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        using var cts = new CancellationTokenSource(Timeout);
        await using var clone = await fixture.RestoreCloneAsync("vsock", ct: cts.Token);
        var client = clone.Agent;

        // Host-initiated: 20 KB each way (several RW packets and credit updates).
        var payload = new byte[20_000];
        new Random(7).NextBytes(payload);
        var reply = await client.PingAsync(payload, cts.Token);
        Assert.Equal(payload, reply.Payload.ToByteArray());

        // Round-trip latency of a small request through the whole path (informational, PVM-labelled).
        var samples = new List<double>();
        for (int i = 0; i < 50; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            await client.PingAsync(new byte[8], cts.Token);
            samples.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
        }
        samples.Sort();
        output.WriteLine($"vsock agent Ping round trip (PVM host, restored clone, 8-byte payload, 50 samples): p50 {samples[25]:F0} us, p90 {samples[45]:F0} us, max {samples[^1]:F0} us");

        // Guest-initiated, from the restored clone: a second agent (fake system: no mounts) reports ready to host port 55.
        using var ready = AgentReadyListener.Bind(VsockDeviceSpec.GuestInitiatedPath(clone.VsockPath, 55));
        var started = await clone.ExecAsync(cts.Token, "sh", "-c",
            "setsid /usr/bin/firesharp-agent --listen vsock:54 --ready vsock:2:55 --fake-system </dev/null >/dev/null 2>&1 & echo started");
        Assert.True(started is (0, "started\n", _), $"starting the second agent: {started}");
        var report = await ready.WaitAsync(cts.Token);
        Assert.Equal(AgentProtocol.Version, report.Agent.ProtocolVersion);

        // And host-initiated to that one (another guest port through the same device).
        await using var second = await AgentClient.ConnectHybridVsockAsync(clone.VsockPath, 54, cts.Token);
        Assert.Equal(new byte[] { 5, 4 }, (await second.PingAsync(new byte[] { 5, 4 }, cts.Token)).Payload.ToByteArray());
        Assert.False(clone.Vm.Exited.IsCompleted, "the clone ended");
    }
}
