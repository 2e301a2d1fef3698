using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// Hidden: <c>firesharp snapshot bench DIR --count N --parallel P</c>, the restore driver of the density benchmark
/// (P9, tests/bench/density.py). Restores N clones of one snapshot through the daemon's RestoreVm, P in flight,
/// with ids PREFIX0000, PREFIX0001, ... from <c>--first</c>, and leaves them running. It stops issuing restores at
/// the first failure (the calls in flight finish) and reports it, so the benchmark can say where a limit was hit.
/// Output (stdout), one <c>key=value</c> a line: requested, restored, failed, wall_s, rate, latency_ms_p50/p90/p99/max,
/// and, after a failure, failed_index and failed_error (status and the daemon's message, rest of the line).
/// </summary>
internal static class SnapshotBenchCommand
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(60);

    public static Command Create()
    {
        var dir = new Argument<string>("dir") { Description = "the snapshot directory" };
        var count = new Option<int>("--count") { Description = "clones to restore", DefaultValueFactory = _ => 50 };
        var parallel = new Option<int>("--parallel") { Description = "restores in flight", DefaultValueFactory = _ => 8 };
        var prefix = new Option<string>("--prefix") { Description = "id prefix", DefaultValueFactory = _ => "clone-" };
        var first = new Option<int>("--first") { Description = "index of the first clone's id" };
        var command = new Command("bench", "restore many clones of a snapshot (density benchmark)") { dir, count, parallel, prefix, first };
        command.Hidden = true;
        command.SetAction((parse, ct) => VmClientCommands.CallAsync(parse, async (client, _) =>
        {
            int n = parse.GetValue(count), inFlight = Math.Max(1, parse.GetValue(parallel)), start = parse.GetValue(first);
            var request = new RestoreVmRequest { Dir = Path.GetFullPath(parse.GetValue(dir)!), Labels = { ["bench"] = "density" } };
            string idPrefix = parse.GetValue(prefix)!;
            var latencies = new List<double>(n);
            var gate = new Lock();
            int next = 0, failedIndex = -1;
            string failure = "";
            long t0 = Stopwatch.GetTimestamp();

            async Task RestoreLoopAsync()
            {
                while (true)
                {
                    int i;
                    lock (gate)
                    {
                        if (failedIndex >= 0 || next >= n) return;
                        i = next++;
                    }
                    var one = request.Clone();
                    one.Id = idPrefix + (start + i).ToString("D4", CultureInfo.InvariantCulture);
                    long t = Stopwatch.GetTimestamp();
                    try
                    {
                        await client.RestoreVmAsync(one, deadline: DateTime.UtcNow.Add(CallTimeout), cancellationToken: ct);
                        double ms = Stopwatch.GetElapsedTime(t).TotalMilliseconds;
                        lock (gate) latencies.Add(ms);
                    }
                    catch (RpcException e) when (!ct.IsCancellationRequested)
                    {
                        lock (gate)
                        {
                            if (failedIndex < 0 || start + i < failedIndex)
                            {
                                failedIndex = start + i;
                                failure = $"{e.StatusCode}: {e.Status.Detail}";
                            }
                        }
                    }
                }
            }

            await Task.WhenAll(Enumerable.Range(0, Math.Min(inFlight, n)).Select(_ => RestoreLoopAsync()));
            double wall = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            latencies.Sort();
            var c = CultureInfo.InvariantCulture;
            Console.WriteLine(string.Create(c, $"requested={n}"));
            Console.WriteLine(string.Create(c, $"restored={latencies.Count}"));
            Console.WriteLine(string.Create(c, $"failed={(failedIndex >= 0 ? 1 : 0)}"));
            Console.WriteLine(string.Create(c, $"parallel={inFlight}"));
            Console.WriteLine(string.Create(c, $"wall_s={wall:F3}"));
            Console.WriteLine(string.Create(c, $"rate={(wall > 0 ? latencies.Count / wall : 0):F1}"));
            if (latencies.Count > 0)
                foreach (var (name, p) in (ReadOnlySpan<(string, double)>)[("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)])
                    Console.WriteLine(string.Create(c, $"latency_ms_{name}={latencies[Math.Min(latencies.Count - 1, (int)Math.Ceiling(p / 100 * latencies.Count) - 1)]:F1}"));
            if (failedIndex >= 0)
            {
                Console.WriteLine(string.Create(c, $"failed_index={failedIndex}"));
                Console.WriteLine("failed_error=" + failure.ReplaceLineEndings(" "));
            }
        }, ct, streaming: true));
        return command;
    }
}
