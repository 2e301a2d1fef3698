using System.Diagnostics;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;

namespace FireSharp.Tests.Linux;

/// <summary>
/// Boot once, clone many: the Linux fixture (booted once per machine and cached, <see cref="LinuxGuestFixture"/>)
/// restored as three clones at the same time, each with its own vsock socket; each answers Exec through its
/// agent, writes its own data and sees only its own.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class LinuxCloneTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);

    [SkippableFact]
    public async Task Three_clones_restored_concurrently_each_answer_exec_and_keep_their_own_data()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        output.WriteLine($"fixture {(fixture.Built ? "built" : "reused")} in {fixture.PrepareTime.TotalSeconds:F1} s: {fixture.SnapshotDir}");
        using var cts = new CancellationTokenSource(Timeout);

        var clones = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => Task.Run(() => fixture.RestoreCloneAsync($"clone{i}", ct: cts.Token))));
        try
        {
            Assert.Equal(3, clones.Select(c => c.VsockPath).Distinct().Count());
            foreach (var c in clones)
                output.WriteLine($"{c.Name}: MicroVm.Restore {c.RestoreTime.TotalMilliseconds:F1} ms, restore start to agent Hello {c.RestoreToAgent.TotalMilliseconds:F0} ms (PVM host, 3 concurrent)");

            // Every clone writes at the same time, then every clone reads: shared memory or files would show up here.
            var writes = await Task.WhenAll(clones.Select((c, i) =>
                c.ExecAsync(cts.Token, "sh", "-c", $"echo data-of-clone-{i}-$((1000+{i})) > /tmp/mine-{i} && echo wrote")));
            for (int i = 0; i < 3; i++)
                Assert.True(writes[i] is (0, "wrote\n", _), $"clone {i} write: {writes[i]}; console:\n{LinuxGuestFixture.Tail(clones[i].Console.GetText())}");
            var reads = await Task.WhenAll(clones.Select(c => c.ExecAsync(cts.Token, "sh", "-c", "cat /tmp/mine-*")));
            for (int i = 0; i < 3; i++)
            {
                Assert.Equal(0, reads[i].Code);
                // Its own (computed by its shell), and nobody else's.
                Assert.Equal($"data-of-clone-{i}-{1000 + i}\n", reads[i].Stdout);
            }

            // Restore to the first Exec reply, on a fresh clone (PVM host; informational).
            var sw = Stopwatch.StartNew();
            await using (var fresh = await fixture.RestoreCloneAsync("latency", ct: cts.Token))
            {
                var r = await fresh.ExecAsync(cts.Token, "true");
                Assert.Equal(0, r.Code);
                output.WriteLine($"restore to first Exec reply: {sw.Elapsed.TotalMilliseconds:F0} ms (MicroVm.Restore {fresh.RestoreTime.TotalMilliseconds:F1} ms; PVM host, alone)");
            }

            foreach (var c in clones) Assert.False(c.Vm.Exited.IsCompleted, $"{c.Name} ended: {(c.Vm.Exited.IsCompleted ? c.Vm.Exited.Result : null)}");
        }
        finally
        {
            foreach (var c in clones) await c.DisposeAsync();
        }
    }

    /// <summary>
    /// Clones share the snapshot's kernel RNG state; after the reseed (host entropy + RNDRESEEDCRNG through the
    /// agent) their random streams differ. Without it they are identical (shown, not asserted: the kernel may
    /// reseed on its own schedule).
    /// </summary>
    [SkippableFact]
    public async Task Reseeded_clones_of_one_snapshot_draw_different_random_numbers()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        using var cts = new CancellationTokenSource(Timeout);
        const string Draw = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'";

        var plain = await Task.WhenAll(Enumerable.Range(0, 2).Select(i => fixture.RestoreCloneAsync($"plain{i}", reseed: false, cts.Token)));
        try
        {
            var draws = await Task.WhenAll(plain.Select(c => RunAsync(c, cts.Token, "sh", "-c", Draw)));
            output.WriteLine($"without reseed: clone 0 drew {draws[0]}, clone 1 drew {draws[1]} ({(draws[0].Stdout == draws[1].Stdout ? "identical" : "different")})");
        }
        finally
        {
            foreach (var c in plain) await c.DisposeAsync();
        }

        var clones = await Task.WhenAll(Enumerable.Range(0, 2).Select(i => fixture.RestoreCloneAsync($"seeded{i}", reseed: true, cts.Token)));
        try
        {
            // A reseed that reports nothing is a failure, not a skip: clones that cannot be reseeded share one RNG state.
            Assert.All(clones, c => Assert.True(c.Reseeded is not null,
                $"{c.Name}: the reseed reported nothing: the guest's agent predates the Reseed request (rebuild the rootfs: make agent rootfs)"));
            Assert.All(clones, c => Assert.True(c.Reseeded, $"{c.Name}: RNDRESEEDCRNG failed"));
            var draws = await Task.WhenAll(clones.Select(c => RunAsync(c, cts.Token, "sh", "-c", Draw)));
            Assert.All(draws, d => Assert.Equal(0, d.Code));
            output.WriteLine($"after reseed: clone 0 drew {draws[0].Stdout}, clone 1 drew {draws[1].Stdout}");
            Assert.Equal(32, draws[0].Stdout.Length);
            Assert.Equal(32, draws[1].Stdout.Length);
            Assert.NotEqual(draws[0].Stdout, draws[1].Stdout); // 16 bytes of /dev/urandom
            for (int i = 0; i < 2; i++)
                Assert.Equal($"seeded{i}\n", (await RunAsync(clones[i], cts.Token, "hostname")).Stdout); // the hostname the reseed set
        }
        finally
        {
            foreach (var c in clones) await c.DisposeAsync();
        }
    }

    /// <summary>Exec, retrying only a command that died of the known PVM SIGSEGV (docs/pvm.md).</summary>
    private async Task<(int? Code, string Stdout, string Stderr)> RunAsync(LinuxClone clone, CancellationToken ct, params string[] argv)
    {
        for (int attempt = 1; ; attempt++)
        {
            var r = await clone.Agent.ExecAsync(new FireSharp.Daemon.Agent.AgentCommand(argv) { Timeout = TimeSpan.FromMinutes(1) }, ct);
            if (r.Signal != 11 || attempt == 3) return (r.ExitCode, System.Text.Encoding.UTF8.GetString(r.Stdout), System.Text.Encoding.UTF8.GetString(r.Stderr));
            output.WriteLine($"{clone.Name}: {string.Join(' ', argv)} died of SIGSEGV (known PVM issue), running it again");
        }
    }

    /// <summary>
    /// The daemon's RestoreVm from the fixture (in-process daemon and workers): each restored VM gets its own vsock
    /// socket in its VM directory, the daemon finds its agent (a probe, since the ready report was before the
    /// snapshot), reseeds it, and Exec works.
    /// </summary>
    [SkippableFact]
    public async Task RestoreVm_clones_get_their_own_vsock_and_answer_exec_through_the_daemon()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        await using var s = await ApiTestServer.StartAsync(output, stateDir: fixture.NewDaemonStateDir());
        var c = s.Client;
        string[] ids = ["ca", "cb"];
        var sw = Stopwatch.StartNew();
        var restored = await Task.WhenAll(ids.Select(id => c.RestoreVmAsync(new RestoreVmRequest { Dir = fixture.SnapshotDir, Id = id }).ResponseAsync));
        Assert.All(restored, v => Assert.Equal(VmState.Running, v.State));
        Assert.All(restored, v => Assert.Equal(3u, v.Spec.Vsock.GuestCid));
        Assert.All(restored, v => Assert.True(v.Spec.Agent));
        var readyAfter = new double[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (!(await c.GetVmAsync(new GetVmRequest { Id = ids[i] })).AgentReady)
            {
                Assert.True(DateTime.UtcNow < deadline, $"VM {ids[i]}: the daemon never found its agent");
                await Task.Delay(20);
            }
            readyAfter[i] = sw.Elapsed.TotalMilliseconds;
        }
        var writes = await Task.WhenAll(ids.Select(id => c.ExecAsync(new ExecRequest { Id = id, Argv = { "sh", "-c", $"echo {id} > /tmp/who; cat /tmp/who; hostname" } }).ResponseAsync));
        output.WriteLine($"RestoreVm x2 (concurrent) to agent_ready: {string.Join(", ", readyAfter.Select(t => $"{t:F0} ms"))}; to Exec replies {sw.Elapsed.TotalMilliseconds:F0} ms (PVM host, in-process workers)");
        for (int i = 0; i < ids.Length; i++)
        {
            Assert.Equal(0, writes[i].ExitCode);
            Assert.StartsWith($"{ids[i]}\n", writes[i].Stdout.ToStringUtf8());
        }
        // Each worker's socket lives in its own VM directory.
        foreach (var id in ids) Assert.True(File.Exists(Path.Combine(s.Options.RunDir(id), "v.sock")), $"no vsock socket for {id}");
        foreach (var id in ids) await c.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
        Assert.Empty(s.VmDirs());
    }

    /// <summary>
    /// The same through the real daemon (<c>firesharp serve</c>, build/firesharp or $FIRESHARP_BIN): each RestoreVm
    /// runs in its own <c>firesharp-vmm</c> worker process, with its own vsock socket.
    /// </summary>
    [SkippableFact]
    public async Task RestoreVm_clones_run_in_their_own_worker_processes_and_answer_exec()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        await using var d = await DaemonUnderTest.StartAsync(output, stateDir: fixture.NewDaemonStateDir());
        string[] ids = ["pa", "pb"];
        var sw = Stopwatch.StartNew();
        var restored = await Task.WhenAll(ids.Select(id => d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = fixture.SnapshotDir, Id = id }).ResponseAsync));
        Assert.All(restored, v => Assert.Equal(VmState.Running, v.State));
        Assert.NotEqual(restored[0].WorkerPid, restored[1].WorkerPid);
        Assert.All(restored, v => Assert.NotEqual(Environment.ProcessId, v.WorkerPid));
        foreach (var id in ids)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (!(await d.Client.GetVmAsync(new GetVmRequest { Id = id })).AgentReady)
            {
                Assert.True(DateTime.UtcNow < deadline, $"VM {id}: the daemon never found its agent");
                await Task.Delay(20);
            }
        }
        var replies = await Task.WhenAll(ids.Select(id => d.Client.ExecAsync(new ExecRequest { Id = id, Argv = { "sh", "-c", $"echo {id} > /tmp/who; cat /tmp/who" } }).ResponseAsync));
        output.WriteLine($"RestoreVm x2 into worker processes to Exec replies: {sw.Elapsed.TotalMilliseconds:F0} ms (PVM host)");
        for (int i = 0; i < ids.Length; i++)
        {
            Assert.Equal(0, replies[i].ExitCode);
            Assert.Equal($"{ids[i]}\n", replies[i].Stdout.ToStringUtf8());
        }
        foreach (var id in ids) await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true });
    }
}
