using System.Collections.Concurrent;
using FireSharp.Daemon.Logs;
using FireSharp.Logging;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Logging;
using Serilog.Core;
using Serilog.Events;
using Serilog.Extensions.Logging;

namespace FireSharp.Tests.Logs;

/// <summary>
/// The worker's JSON lines and the daemon's relay of them: through the daemon's Serilog pipeline, with the VM's id,
/// the worker's category, level and event id; a storm is cut to the rate with one "N lines dropped" warning; the
/// file is rotated past its cap.
/// </summary>
public sealed class WorkerLogRelayTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();
    private readonly Collector _events = new();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string LogPath => Path.Combine(_dir, WorkerLogRelay.FileName);

    private SerilogLoggerFactory Loggers() =>
        new(new Serilog.LoggerConfiguration().MinimumLevel.Verbose().Enrich.FromLogContext().WriteTo.Sink(_events).CreateLogger(), dispose: true);

    private static string Line(string message, LogLevel level = LogLevel.Information, int eventId = 5002, Exception? e = null,
        IReadOnlyList<KeyValuePair<string, object?>>? props = null) =>
        JsonLineLogger.Format(DateTimeOffset.UtcNow, level, "FireSharp.Worker", eventId, message, e?.ToString(), props);

    [Fact]
    public void A_json_line_round_trips_with_escapes_properties_and_the_exception()
    {
        string message = "quote \" backslash \\ tab \t newline \n ümlaut € \u0001";
        string line = Line(message, LogLevel.Error, 5009, new InvalidOperationException("boom"), [new("Id", "vm-1"), new("Mib", 64UL), new("{OriginalFormat}", "x")]);
        Assert.EndsWith("\n", line, StringComparison.Ordinal);
        Assert.Equal(1, line.Count(c => c == '\n'));
        Assert.All(line, c => Assert.True(c < 0x80, "the line is ASCII"));
        var parsed = WorkerLogLine.Parse(line.TrimEnd('\n'));
        Assert.Equal(message, parsed.Message);
        Assert.Equal(LogLevel.Error, parsed.Level);
        Assert.Equal("FireSharp.Worker", parsed.Category);
        Assert.Equal(5009, parsed.EventId);
        Assert.Contains("InvalidOperationException: boom", parsed.Exception, StringComparison.Ordinal);
        Assert.Equal([new("Id", "vm-1"), new("Mib", "64")], parsed.Properties);
        Assert.NotNull(parsed.Time);
        Assert.Contains("ERROR FireSharp.Worker: quote", parsed.Render(), StringComparison.Ordinal);

        var raw = WorkerLogLine.Parse("Unhandled exception. System.Exception: not json");
        Assert.Equal(LogLevel.Warning, raw.Level);
        Assert.Equal(WorkerLogLine.RawCategory, raw.Category);
        Assert.Equal("Unhandled exception. System.Exception: not json", raw.Message);
    }

    [Fact]
    public async Task Worker_lines_are_logged_again_with_the_vm_id_category_level_and_event_id()
    {
        File.WriteAllText(LogPath, Line("written before the relay started"));
        long start = WorkerLogRelay.Length(LogPath);
        File.AppendAllText(LogPath, Line("worker vm-7: machine created (16 MiB)", props: [new("Mib", 16)]) + Line("a warning", LogLevel.Warning, 5004) + "not json at all\n" + "{\"t\":\"x\",\"l\":\"Debug\",\"c\":\"C\",\"m\":\"par");
        using var loggers = Loggers();
        var relay = new WorkerLogRelay("vm-7", LogPath, start, loggers, new LogLimits());
        relay.Pump();
        File.AppendAllText(LogPath, "tial\"}\n"); // the rest of a line cut by the read
        relay.Pump();
        await relay.RunAsync(Task.CompletedTask, CancellationToken.None); // ends at once: one last read

        var events = _events.Events.ToList();
        Assert.DoesNotContain(events, e => e.RenderMessage().Contains("before the relay", StringComparison.Ordinal));
        var created = Assert.Single(events, e => e.RenderMessage().Contains("machine created", StringComparison.Ordinal));
        Assert.Equal(LogEventLevel.Information, created.Level);
        Assert.Equal("\"vm-7\"", created.Properties["VmId"].ToString());
        Assert.Equal("\"FireSharp.Worker\"", created.Properties["SourceContext"].ToString());
        Assert.Equal("5002", created.Properties["WorkerEventId"].ToString());
        Assert.Equal("\"16\"", created.Properties["Mib"].ToString());
        Assert.Equal("VM {VmId}: {WorkerMessage}", created.MessageTemplate.Text); // the id in the text too, for journald
        Assert.Equal(LogEventLevel.Warning, Assert.Single(events, e => e.RenderMessage().Contains("a warning", StringComparison.Ordinal)).Level);
        var raw = Assert.Single(events, e => e.RenderMessage().Contains("not json at all", StringComparison.Ordinal));
        Assert.Equal("\"firesharp-vmm\"", raw.Properties["SourceContext"].ToString());
        var joined = Assert.Single(events, e => e.RenderMessage().Contains("partial", StringComparison.Ordinal));
        Assert.Equal(LogEventLevel.Debug, joined.Level);
        Assert.Equal(4, relay.Relayed);
    }

    [Fact]
    public async Task A_log_storm_is_cut_to_the_rate_with_one_dropped_lines_summary()
    {
        const int Rate = 10, Storm = 5000;
        File.WriteAllText(LogPath, string.Concat(Enumerable.Range(0, Storm).Select(i => Line($"storm line {i}"))));
        using var loggers = Loggers();
        var relay = new WorkerLogRelay("vm-s", LogPath, 0, loggers, new LogLimits { LinesPerSecond = Rate, WorkerLogMaxBytes = 0 });
        relay.Pump();
        Assert.InRange(relay.Relayed, 1, 2 * Rate); // the burst, no more
        Assert.Equal(Storm - relay.Relayed, relay.DroppedTotal);
        Assert.DoesNotContain(_events.Events, e => e.RenderMessage().Contains("dropped", StringComparison.Ordinal));

        // Once lines pass again (the bucket refills every second), the count comes first, once.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!_events.Events.Any(e => e.RenderMessage().Contains("dropped", StringComparison.Ordinal)))
        {
            await Task.Delay(200, cts.Token);
            File.AppendAllText(LogPath, Line("after the storm"));
            relay.Pump();
        }
        var summary = Assert.Single(_events.Events, e => e.RenderMessage().Contains("dropped", StringComparison.Ordinal));
        Assert.Equal(LogEventLevel.Warning, summary.Level);
        Assert.Equal("\"vm-s\"", summary.Properties["VmId"].ToString());
        // Everything dropped until then, counted once (nothing was dropped after it: the line that passed triggered it).
        Assert.Equal(relay.DroppedTotal, long.Parse(summary.Properties["Dropped"].ToString(), System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(relay.DroppedTotal >= Storm - 2 * Rate);
        relay.Dispose();
    }

    [Fact]
    public void Past_its_cap_the_worker_log_is_copied_to_dot_1_and_truncated_without_losing_a_line()
    {
        const int Lines = 50;
        using var loggers = Loggers();
        var relay = new WorkerLogRelay("vm-r", LogPath, 0, loggers, new LogLimits { LinesPerSecond = 10_000, WorkerLogMaxBytes = 2000 });
        // Each line appended at the file's end, as the worker's O_APPEND fd does (ProcInfo.RedirectStdio).
        for (int i = 0; i < Lines; i++)
        {
            File.AppendAllText(LogPath, Line($"line {i}"));
            if (i % 7 == 0) relay.Pump();
        }
        relay.Pump();
        Assert.True(File.Exists(LogPath + ".1"));
        Assert.True(new FileInfo(LogPath).Length <= 2000 + 200, "the current file was truncated");
        for (int i = 0; i < Lines; i++)
            Assert.Single(_events.Events, e => e.Properties.TryGetValue("WorkerMessage", out var m) && m.ToString() == $"\"line {i}\"");
        relay.Dispose();
    }

    [Fact]
    public void A_worker_logs_only_under_the_vmms_own_categories_and_a_bounded_number_of_them()
    {
        using var loggers = Loggers();
        using var relay = new WorkerLogRelay("vm-c", LogPath, 0, loggers, new LogLimits());
        Assert.Equal("FireSharp.Worker", relay.CategoryOf("FireSharp.Worker"));
        Assert.Equal("FireSharp.Devices.Virtio.VirtioBlock", relay.CategoryOf("FireSharp.Devices.Virtio.VirtioBlock"));
        // The daemon's own categories, anything else, odd characters and long names are the raw category.
        foreach (var c in new[] { "FireSharp.Daemon.Auth.ApiAuthorization", "FireSharp.Cli", "FireSharp.Pool.Invoker", "Microsoft.AspNetCore", "FireSharp.X y", "FireSharp.\n", "FireSharp." + new string('a', 200) })
            Assert.Equal(WorkerLogLine.RawCategory, relay.CategoryOf(c));
        // At most MaxCategories distinct ones: a worker cannot grow the logger factory without bound.
        for (int i = 0; i < WorkerLogRelay.MaxCategories * 2; i++)
            File.AppendAllText(LogPath, $"{{\"t\":\"2026-12-07T00:00:00Z\",\"l\":\"Information\",\"c\":\"FireSharp.Made{i}\",\"m\":\"x\"}}\n");
        relay.Pump();
        Assert.Equal(WorkerLogLine.RawCategory, relay.CategoryOf("FireSharp.Made" + (WorkerLogRelay.MaxCategories * 2 - 1)));
        Assert.Equal("FireSharp.Made0", relay.CategoryOf("FireSharp.Made0"));
    }

    private sealed class Collector : ILogEventSink
    {
        public ConcurrentQueue<LogEvent> Events { get; } = new();
        public void Emit(LogEvent logEvent) => Events.Enqueue(logEvent);
    }
}
