using System.Diagnostics;
using System.Globalization;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using Xunit.Abstractions;

namespace FireSharp.Tests.Agent;

/// <summary>Agent processes of their own: shutdown, signals, and the host figures.</summary>
public sealed class AgentLifecycleTests(ITestOutputHelper output)
{
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token;

    [Fact]
    public async Task Shutdown_replies_then_stops_commands_and_powers_off()
    {
        await using var agent = await AgentUnderTest.StartAsync();
        await using var busy = await agent.ConnectAsync(Deadline());
        var running = busy.ExecAsync(new AgentCommand("sleep", "100"), null, Deadline());
        // Wait until the command runs (a second connection sees it in the process list).
        await using var client = await agent.ConnectAsync(Deadline());
        for (int i = 0; i < 100 && !(await client.ExecAsync(new AgentCommand("pgrep", "-P", agent.Process.Id.ToString(CultureInfo.InvariantCulture), "sleep"), Deadline())).StdoutText.Contains('\n'); i++)
            await Task.Delay(50);

        await client.ShutdownAsync(ShutdownMode.PowerOff, Deadline());
        Assert.Equal(0, await agent.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        Assert.Contains("fake sync", agent.Stderr);
        Assert.Contains("fake power-off (PowerOff)", agent.Stderr);
        // The running command got SIGTERM first, and its exit was reported before the agent left.
        Assert.Equal(15, (await running).Signal);
    }

    [Fact]
    public async Task SIGTERM_is_forwarded_to_running_commands_and_the_agent_stops()
    {
        await using var agent = await AgentUnderTest.StartAsync();
        await using var client = await agent.ConnectAsync(Deadline());
        var started = new TaskCompletionSource();
        var exec = client.ExecAsync(new AgentCommand("sh", "-c", "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done"),
            (_, chunk, _) =>
            {
                if (System.Text.Encoding.ASCII.GetString(chunk.Span).Contains("ready")) started.TrySetResult();
                return ValueTask.CompletedTask;
            }, Deadline());
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, Tmds.Linux.LibC.kill(agent.Process.Id, Tmds.Linux.LibC.SIGTERM));
        var result = await exec;
        Assert.Equal(3, result.ExitCode);
        Assert.Contains("got TERM", result.StdoutText);
        Assert.Equal(0, await agent.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        Assert.Contains("signal 15: stopping", agent.Stderr);
    }

    [Fact]
    public async Task Agent_refuses_bad_arguments_with_usage()
    {
        var (file, args) = AgentUnderTest.AgentBinary.Value;
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--listen");
        psi.ArgumentList.Add("tcp:1234");
        using var p = Process.Start(psi)!;
        var stderr = await p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync(Deadline());
        Assert.Equal(2, p.ExitCode);
        Assert.Contains("--listen: 'tcp:1234' is not unix:PATH, vsock:PORT or vsock:CID:PORT", stderr);
    }

    /// <summary>
    /// Host figures (not assertions on time): start-up to ready, RSS, and the Ping round trip
    /// over a Unix socket. Printed to the test log; meaningful for a NativeAOT agent
    /// (FIRESHARP_AGENT_BIN, as `make test` runs it).
    /// </summary>
    [Fact]
    public async Task Host_figures_startup_rss_and_ping_latency()
    {
        var startups = new List<double>();
        AgentUnderTest? last = null;
        for (int i = 0; i < 5; i++)
        {
            if (last is not null) await last.DisposeAsync();
            last = await AgentUnderTest.StartAsync();
            startups.Add(Stopwatch.GetElapsedTime(last.StartTimestamp, last.ReadyTimestamp).TotalMilliseconds);
        }
        await using var agent = last!;
        long rssReady = RssKiB(agent.Process.Id), faultsReady = MinorFaults(agent.Process.Id);

        await using var client = await agent.ConnectAsync(Deadline());
        for (int i = 0; i < 200; i++) await client.PingAsync(cancellationToken: Deadline()); // warm-up
        var samples = new double[2000];
        for (int i = 0; i < samples.Length; i++)
        {
            long t = Stopwatch.GetTimestamp();
            await client.PingAsync(cancellationToken: Deadline());
            samples[i] = Stopwatch.GetElapsedTime(t).TotalMicroseconds;
        }
        var exec = Stopwatch.StartNew();
        for (int i = 0; i < 20; i++) await client.ExecAsync(new AgentCommand("true"), Deadline());
        double execMs = exec.Elapsed.TotalMilliseconds / 20;
        long rssAfter = RssKiB(agent.Process.Id);
        Array.Sort(samples);
        startups.Sort();

        output.WriteLine($"agent binary: {(AgentUnderTest.IsNativeBuild ? "NativeAOT" : "JIT (dotnet)")} {AgentUnderTest.AgentBinary.Value.FileName}");
        output.WriteLine($"start-up to Ready received (host, 5 runs): median {startups[2]:F1} ms, min {startups[0]:F1} ms; agent's own figure {agent.Ready.StartupUs / 1000.0:F1} ms");
        output.WriteLine($"RSS at ready {rssReady} KiB, after 2200 pings + 20 execs {rssAfter} KiB; minor faults to ready {faultsReady}");
        output.WriteLine($"Ping round trip over a Unix socket: median {samples[samples.Length / 2]:F1} us, p99 {samples[samples.Length * 99 / 100]:F1} us, min {samples[0]:F1} us");
        output.WriteLine($"Exec `true` round trip: {execMs:F2} ms");
        Assert.True(rssReady > 0 && faultsReady > 0);
        Assert.All(samples, s => Assert.True(s > 0));
    }

    private static long RssKiB(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static long MinorFaults(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return long.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[7], CultureInfo.InvariantCulture); // field 10: minflt
    }
}
