using System.Collections.Concurrent;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Logs;

/// <summary>
/// Brings one VM's worker log into the daemon's: tails <c>worker.log</c> (the worker's stderr, JSON lines, see
/// <see cref="WorkerLogLine"/>) and logs each line again through the daemon's logging, at the worker's level, under
/// the worker's category, with the VM's id (<c>VmId</c>), the worker's event id (<c>WorkerEventId</c>) and time
/// (<c>WorkerTime</c>) and the message's own values as properties. So they reach journald and the JSON file with the
/// daemon's own events.
/// </summary>
/// <remarks>
/// <para>A file, not a pipe: a worker outlives a daemon restart (the next daemon adopts it and tails on from the file's
/// end), and a daemon that reads slowly never blocks a worker's write (a full pipe would stall the thread that logs,
/// a vCPU's among them).</para>
/// <para>Storms: at most <see cref="LogLimits.LinesPerSecond"/> lines a second per VM (bursts of twice that) are
/// logged again; the rest are counted and reported as one "N lines dropped" warning once lines pass again (and when
/// the relay ends). The file itself keeps every line and is capped: past <see cref="LogLimits.WorkerLogMaxBytes"/> it
/// is copied to <c>worker.log.1</c> and truncated (the worker writes in O_APPEND mode, so it goes on at the new
/// end; a line written in the instant between the last read and the truncation can be lost).</para>
/// </remarks>
public sealed class WorkerLogRelay : IDisposable
{
    public const string FileName = "worker.log";
    /// <summary>A line longer than this is cut (the worker never writes one; raw text might).</summary>
    public const int MaxLineBytes = 64 * 1024;
    internal static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(200);

    private readonly string _vmId;
    private readonly string _path;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _own;
    private readonly LogLimits _limits;
    private readonly TokenBucketRateLimiter _limiter;
    private readonly ConcurrentDictionary<string, ILogger> _categories = new(StringComparer.Ordinal);
    private readonly MemoryStream _partial = new();
    private long _offset;
    private long _dropped;
    private FileStream? _file;

    /// <param name="start">Where to start reading: the file's length when the worker was launched or adopted.</param>
    public WorkerLogRelay(string vmId, string path, long start, ILoggerFactory loggers, LogLimits limits)
    {
        ArgumentNullException.ThrowIfNull(loggers);
        ArgumentNullException.ThrowIfNull(limits);
        _vmId = vmId;
        _path = path;
        _offset = start;
        _loggers = loggers;
        _limits = limits;
        _own = loggers.CreateLogger("FireSharp.Daemon.Logs.WorkerLogRelay");
        int rate = Math.Max(1, limits.LinesPerSecond);
        _limiter = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = rate * 2, TokensPerPeriod = rate, ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 0, AutoReplenishment = true,
        });
    }

    /// <summary>Lines logged again and lines dropped by the rate limit (tests).</summary>
    internal long Relayed { get; private set; }
    internal long DroppedTotal { get; private set; }

    /// <summary>The file's length now (0 when it does not exist): where a relay for a worker about to start begins.</summary>
    public static long Length(string path)
    {
        try { return new FileInfo(path).Exists ? new FileInfo(path).Length : 0; }
        catch (IOException) { return 0; }
    }

    /// <summary>
    /// Tails the file until <paramref name="exited"/> completes (the worker ended) or <paramref name="ct"/> is cancelled
    /// (the daemon let go of it), then reads what is left once more and reports what was dropped.
    /// </summary>
    public async Task RunAsync(Task exited, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(exited);
        await Task.Yield();
        try
        {
            while (!ct.IsCancellationRequested && !exited.IsCompleted)
            {
                Pump();
                try { await Task.WhenAny(Task.Delay(PollInterval, ct), exited).ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
            Pump(); // the worker's last words (a crash report comes as it ends)
            ReportDropped();
        }
        finally
        {
            Dispose();
        }
    }

    /// <summary>Releases the file and the limiter (<see cref="RunAsync"/> does when it ends).</summary>
    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
        _limiter.Dispose();
        _partial.Dispose();
    }

    /// <summary>Reads what was appended since the last call and logs it again; rotates the file past its cap.</summary>
    internal void Pump()
    {
        try
        {
            var file = _file ??= new FileStream(_path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None);
            long length = file.Length;
            if (length < _offset) { _offset = 0; _partial.SetLength(0); } // truncated by someone else
            if (length > _offset)
            {
                file.Position = _offset;
                var buffer = new byte[Math.Min(length - _offset, 1 << 20)];
                while (_offset < length)
                {
                    int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, length - _offset));
                    if (n <= 0) break;
                    _offset += n;
                    Split(buffer.AsSpan(0, n));
                }
            }
            if (_limits.WorkerLogMaxBytes > 0 && length > _limits.WorkerLogMaxBytes) Rotate(file);
        }
        catch (FileNotFoundException) { }
        catch (DirectoryNotFoundException) { }
        catch (IOException e) { LogsLog.RelayFailed(_own, _vmId, e.Message); }
        catch (UnauthorizedAccessException e) { LogsLog.RelayFailed(_own, _vmId, e.Message); }
    }

    private void Split(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            int nl = data.IndexOf((byte)'\n');
            if (nl < 0)
            {
                int room = MaxLineBytes - (int)_partial.Length;
                _partial.Write(data[..Math.Min(room, data.Length)]);
                if (_partial.Length >= MaxLineBytes) EmitPartial();
                return;
            }
            if (_partial.Length > 0)
            {
                int room = MaxLineBytes - (int)_partial.Length;
                _partial.Write(data[..Math.Min(room, nl)]);
                EmitPartial();
            }
            else
            {
                Relay(Encoding.UTF8.GetString(data[..Math.Min(nl, MaxLineBytes)]));
            }
            data = data[(nl + 1)..];
        }
    }

    private void EmitPartial()
    {
        Relay(Encoding.UTF8.GetString(_partial.GetBuffer(), 0, (int)_partial.Length));
        _partial.SetLength(0);
    }

    private void Relay(string text)
    {
        text = text.TrimEnd('\r');
        if (text.Length == 0) return;
        using (var lease = _limiter.AttemptAcquire(1))
        {
            if (!lease.IsAcquired)
            {
                _dropped++;
                DroppedTotal++;
                return;
            }
        }
        ReportDropped();
        var line = WorkerLogLine.Parse(text);
        var logger = _categories.GetOrAdd(CategoryOf(line.Category), c => _loggers.CreateLogger(c));
        if (!logger.IsEnabled(line.Level)) return;
        var scope = new List<KeyValuePair<string, object?>>(4 + line.Properties.Count)
        {
            new("VmId", _vmId),
        };
        if (line.EventId != 0) scope.Add(new("WorkerEventId", line.EventId));
        if (line.Time is { } t) scope.Add(new("WorkerTime", t));
        foreach (var (key, value) in line.Properties)
            if (key is not ("VmId" or "WorkerEventId" or "WorkerTime" or "WorkerMessage")) scope.Add(new(key, value));
        string message = line.Exception is null ? line.Message : line.Message + "\n" + line.Exception;
        using (logger.BeginScope(scope)) LogsLog.WorkerLine(logger, line.Level, _vmId, message);
        Relayed++;
    }

    /// <summary>The most categories one worker may log under: the logger factory keeps every category it is asked for.</summary>
    public const int MaxCategories = 64;

    /// <summary>
    /// The category a worker's line is logged under. The worker is not trusted: only the VMM's own namespaces
    /// (<c>FireSharp.*</c> but the daemon's, CLI's and pool's), of sane length and characters, and at most
    /// <see cref="MaxCategories"/> of them; anything else is <see cref="WorkerLogLine.RawCategory"/>. So a worker can neither
    /// log as the daemon nor grow the daemon's memory with made-up categories.
    /// </summary>
    internal string CategoryOf(string category)
    {
        bool own = category.Length <= 128 && category.StartsWith("FireSharp.", StringComparison.Ordinal)
            && !category.StartsWith("FireSharp.Daemon", StringComparison.Ordinal) && !category.StartsWith("FireSharp.Cli", StringComparison.Ordinal)
            && !category.StartsWith("FireSharp.Pool", StringComparison.Ordinal)
            && category.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '.' or '_');
        if (!own) return WorkerLogLine.RawCategory;
        return _categories.Count < MaxCategories || _categories.ContainsKey(category) ? category : WorkerLogLine.RawCategory;
    }

    private void ReportDropped()
    {
        if (_dropped == 0) return;
        LogsLog.LinesDropped(_own, _vmId, _dropped, _limits.LinesPerSecond);
        _dropped = 0;
    }

    /// <summary>
    /// Copies the file to <c>worker.log.1</c> and truncates it (the worker appends on at 0). Bounded whatever the worker
    /// made of its file (it owns the fd: it could drop O_APPEND and write at a huge offset): at most twice the cap is
    /// kept in <c>.1</c>, copied through a fixed buffer, and at most <see cref="MaxUnreadAtRotation"/> of what was not
    /// read yet is relayed.
    /// </summary>
    private void Rotate(FileStream file)
    {
        long length = file.Length;
        long keep = Math.Min(length, Math.Max(_limits.WorkerLogMaxBytes, MaxUnreadAtRotation) * 2);
        string rotated = _path + ".1", temp = rotated + ".tmp";
        using (var copy = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            file.Position = length - keep;
            CopyBounded(file, copy, keep);
        }
        File.Move(temp, rotated, overwrite: true);
        // What arrived since the last read (only what lands between here and the truncation is lost).
        long unreadFrom = Math.Max(_offset, length - MaxUnreadAtRotation);
        if (length > unreadFrom)
        {
            var unread = new byte[length - unreadFrom];
            file.Position = unreadFrom;
            file.ReadExactly(unread);
            Split(unread);
        }
        file.SetLength(0);
        _partial.SetLength(0); // the rest of a line cut here is gone
        _offset = 0;
    }

    /// <summary>The most of a worker's log not read yet that a rotation relays (the rest is in <c>worker.log.1</c>).</summary>
    private const int MaxUnreadAtRotation = 1 << 20;

    private static void CopyBounded(FileStream from, FileStream to, long count)
    {
        var buffer = new byte[64 * 1024];
        while (count > 0)
        {
            int n = from.Read(buffer, 0, (int)Math.Min(buffer.Length, count));
            if (n == 0) break;
            to.Write(buffer, 0, n);
            count -= n;
        }
    }
}

/// <summary>The daemon's log limits (DaemonOptions: WorkerLogLinesPerSecond, WorkerLogMaxBytes, ConsoleLogMaxBytes).</summary>
public sealed record LogLimits
{
    /// <summary>Worker log lines per second per VM logged again by the daemon (bursts of twice that).</summary>
    public int LinesPerSecond { get; init; } = 100;
    /// <summary><c>worker.log</c> is rotated (to <c>worker.log.1</c>) past this size; 0: never.</summary>
    public long WorkerLogMaxBytes { get; init; } = 4 << 20;
    /// <summary><c>console.log</c> is rotated (to <c>console.log.1</c>) past this size; 0: no console file.</summary>
    public long ConsoleLogMaxBytes { get; init; } = 4 << 20;
}
