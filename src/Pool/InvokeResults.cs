using System.Text;

namespace FireSharp.Pool;

/// <summary>
/// A VM's outcome (or a failed initialization) as the pool's <see cref="InvokeResult"/>: what happened, what the
/// VM said, and the usage. Nothing is invented here for an API: a failure without a body keeps an empty payload.
/// </summary>
internal static class InvokeResults
{
    public const int LogTailBytes = 4096;

    public static InvokeResult FromOutcome(string requestId, FunctionDefinition def, VmInvokeOutcome o, StartKind kind,
        TimeSpan? initDuration, TimeSpan duration)
    {
        FunctionErrorKind? error = o.Status switch
        {
            VmInvokeStatus.Success => null,
            VmInvokeStatus.FunctionError when !o.Unhandled => FunctionErrorKind.Handled,
            _ => FunctionErrorKind.Unhandled,
        };
        var billed = Metering.BilledDuration(duration);
        return new InvokeResult
        {
            RequestId = requestId,
            Status = InvokeStatus.Ran,
            Payload = o.Payload,
            FunctionError = error,
            ErrorType = error is null ? null : o.ErrorType,
            LogTail = Tail(o.LogTail),
            InitDuration = kind == StartKind.Warm ? null : initDuration,
            Duration = duration,
            BilledDuration = billed,
            MaxMemoryUsedMib = (int)Math.Min(int.MaxValue, (o.MaxMemoryUsedBytes + (1 << 20) - 1) >> 20),
            StartKind = kind,
            MemoryMib = def.MemoryMib,
            Timeout = def.Timeout,
            GbSeconds = Metering.GbSeconds(billed, def.MemoryMib),
            Version = def.Version,
            VmStatus = o.Status,
        };
    }

    public static InvokeResult FromInitError(string requestId, FunctionDefinition def, FunctionInitException e, TimeSpan took)
    {
        var billed = Metering.BilledDuration(took);
        return new InvokeResult
        {
            RequestId = requestId,
            Status = InvokeStatus.Ran,
            FunctionError = FunctionErrorKind.Unhandled,
            ErrorType = string.IsNullOrEmpty(e.ErrorType) ? null : e.ErrorType,
            ErrorMessage = e.Message,
            InitFailed = true,
            LogTail = Tail(e.LogTail),
            InitDuration = took,
            Duration = took,
            BilledDuration = billed,
            StartKind = def.SnapshotStart ? StartKind.SnapshotCold : StartKind.BootCold,
            MemoryMib = def.MemoryMib,
            Timeout = def.Timeout,
            GbSeconds = Metering.GbSeconds(billed, def.MemoryMib),
            Version = def.Version,
        };
    }

    /// <summary>The end of <paramref name="s"/> that fits in 4 KiB of UTF-8, cut at a character boundary.</summary>
    public static string Tail(string s)
    {
        if (s.Length <= LogTailBytes / 3 || Encoding.UTF8.GetByteCount(s) <= LogTailBytes) return s;
        int bytes = 0, i = s.Length;
        while (i > 0)
        {
            int start = i - 1;
            if (char.IsLowSurrogate(s[start]) && start > 0 && char.IsHighSurrogate(s[start - 1])) start--;
            int n = Encoding.UTF8.GetByteCount(s.AsSpan(start, i - start));
            if (bytes + n > LogTailBytes) break;
            bytes += n;
            i = start;
        }
        return s[i..];
    }
}
