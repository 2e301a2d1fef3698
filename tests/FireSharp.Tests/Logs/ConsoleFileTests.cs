using System.Text;
using FireSharp.Daemon.Logs;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Logs;

/// <summary>The console file: capped and rotated; the reader's tail and its follow across a rotation.</summary>
public sealed class ConsoleFileTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    [Fact]
    public void The_console_file_is_capped_and_rotated_keeping_the_latest_output()
    {
        var all = new StringBuilder();
        using (var file = new ConsoleFile(PathOf(ConsoleFile.FileName), maxBytes: 1000))
        {
            for (int i = 0; i < 100; i++)
            {
                string chunk = $"chunk {i:D3} {new string('x', 40)}\n";
                all.Append(chunk);
                file.Append(Encoding.ASCII.GetBytes(chunk));
            }
            file.Append(Encoding.ASCII.GetBytes(new string('y', 5000))); // bigger than the cap: its end is kept
            all.Append(new string('y', 5000));
        }
        all.Length -= 5000;
        Assert.Equal(new string('y', 1000), File.ReadAllText(PathOf("console.log"))); // the end of a chunk larger than the cap, alone
        string rotated = File.ReadAllText(PathOf("console.log.1"));
        Assert.InRange(rotated.Length, 1, 1000);
        Assert.EndsWith(rotated, all.ToString(), StringComparison.Ordinal); // the newest output before it, in order, nothing invented
        Assert.False(File.Exists(PathOf("console.log.2")));
    }

    [Fact]
    public async Task The_reader_tails_and_follows_across_a_rotation()
    {
        using var file = new ConsoleFile(PathOf(ConsoleFile.FileName), maxBytes: 150);
        file.Append("first-file-output\n"u8);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var got = new StringBuilder();
        var reading = Task.Run(async () =>
        {
            await foreach (var piece in VmLogReader.ReadAsync(_dir, console: true, vmm: false, follow: true, tailBytes: 0, cts.Token))
            {
                Assert.Equal(VmLogKind.Console, piece.Kind);
                lock (got) got.Append(Encoding.ASCII.GetString(piece.Data.Span));
            }
        }, CancellationToken.None);
        await WaitForAsync(() => got.ToString().Contains("first-file-output", StringComparison.Ordinal), cts.Token);
        file.Append("before-rotation\n"u8);
        file.Append(Encoding.ASCII.GetBytes(new string('z', 120) + "\n")); // rotates once: console.log becomes console.log.1
        file.Append("after-rotation\n"u8);
        await WaitForAsync(() => got.ToString().Contains("after-rotation", StringComparison.Ordinal), cts.Token);
        await cts.CancelAsync();
        await reading;
        string text = got.ToString();
        Assert.True(text.IndexOf("first-file-output", StringComparison.Ordinal) < text.IndexOf("before-rotation", StringComparison.Ordinal));
        Assert.True(text.IndexOf("before-rotation", StringComparison.Ordinal) < text.IndexOf("zzzz", StringComparison.Ordinal));
        Assert.True(text.IndexOf("zzzz", StringComparison.Ordinal) < text.IndexOf("after-rotation", StringComparison.Ordinal));

        // Not following, with a tail: only the end of what is kept.
        var tail = new StringBuilder();
        await foreach (var piece in VmLogReader.ReadAsync(_dir, console: true, vmm: false, follow: false, tailBytes: 10, CancellationToken.None))
            tail.Append(Encoding.ASCII.GetString(piece.Data.Span));
        Assert.Equal("-rotation\n", tail.ToString());
    }

    [Fact]
    public async Task The_vmm_log_is_rendered_one_event_a_line()
    {
        File.WriteAllText(PathOf(WorkerLogRelay.FileName),
            FireSharp.Logging.JsonLineLogger.Format(DateTimeOffset.Parse("2026-12-07T17:00:00Z", System.Globalization.CultureInfo.InvariantCulture),
                Microsoft.Extensions.Logging.LogLevel.Warning, "FireSharp.Worker", 5004, "sent Ctrl-Alt-Del", null, null) + "raw line\n");
        var text = new StringBuilder();
        await foreach (var piece in VmLogReader.ReadAsync(_dir, console: true, vmm: true, follow: false, tailBytes: 0, CancellationToken.None))
        {
            Assert.Equal(VmLogKind.Vmm, piece.Kind); // no console file yet: nothing of it
            text.Append(Encoding.UTF8.GetString(piece.Data.Span));
        }
        Assert.Equal("2026-12-07T17:00:00.000Z WARN  FireSharp.Worker: sent Ctrl-Alt-Del\n- WARN  firesharp-vmm: raw line\n", text.ToString());
    }

    private static async Task WaitForAsync(Func<bool> condition, CancellationToken ct)
    {
        while (!condition()) await Task.Delay(50, ct);
    }
}
