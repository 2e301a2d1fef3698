using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FireSharp.Pool;

/// <summary>A VM's outcome (or an init failure) as the pool's <see cref="InvokeResult"/>, with its usage.</summary>
internal static class InvokeResults
{
    public const int LogTailBytes = 4096;

    public static InvokeResult FromOutcome(string requestId, FunctionDefinition def, VmInvokeOutcome o, StartKind kind,
        TimeSpan? initDuration, TimeSpan duration)
    {
        string? functionError = null, errorType = null;
        var payload = o.Payload;
        switch (o.Status)
        {
            case VmInvokeStatus.Success:
                break;
            case VmInvokeStatus.FunctionError:
                functionError = o.Unhandled ? "Unhandled" : "Handled";
                errorType = o.ErrorType ?? (o.Unhandled ? "Runtime.ExitError" : "Error");
                if (payload.IsEmpty) payload = ErrorPayload(errorType, "the function returned an error");
                break;
            case VmInvokeStatus.Timeout:
                functionError = "Unhandled";
                errorType = o.ErrorType ?? "Sandbox.Timedout";
                if (payload.IsEmpty)
                    payload = ErrorPayload(errorType, string.Create(CultureInfo.InvariantCulture,
                        $"RequestId: {requestId} Error: Task timed out after {def.Timeout.TotalSeconds:0.00} seconds"));
                break;
            case VmInvokeStatus.OutOfMemory:
                functionError = "Unhandled";
                errorType = o.ErrorType ?? "Runtime.OutOfMemory";
                if (payload.IsEmpty)
                    payload = ErrorPayload(errorType, string.Create(CultureInfo.InvariantCulture,
                        $"RequestId: {requestId} Error: Runtime exited with error: signal: killed (memory limit {def.MemoryMib} MB)"));
                break;
            default:
                functionError = "Unhandled";
                errorType = o.ErrorType ?? "Runtime.ExitError";
                if (payload.IsEmpty)
                    payload = ErrorPayload(errorType, $"RequestId: {requestId} Error: Runtime exited unexpectedly");
                break;
        }
        var billed = Metering.BilledDuration(duration);
        return new InvokeResult
        {
            RequestId = requestId,
            Status = InvokeStatus.Ok,
            Payload = payload,
            FunctionError = functionError,
            ErrorType = errorType,
            LogTail = Tail(o.LogTail),
            InitDuration = kind == StartKind.Warm ? null : initDuration,
            Duration = duration,
            BilledDuration = billed,
            MaxMemoryUsedMib = (int)Math.Min(int.MaxValue, (o.MaxMemoryUsedBytes + (1 << 20) - 1) >> 20),
            StartKind = kind,
            MemoryMib = def.MemoryMib,
            GbSeconds = Metering.GbSeconds(billed, def.MemoryMib),
            Version = def.Version,
            VmStatus = o.Status,
        };
    }

    public static InvokeResult FromInitError(string requestId, FunctionDefinition def, FunctionInitException e, TimeSpan took)
    {
        string errorType = string.IsNullOrEmpty(e.ErrorType) ? "Runtime.InitError" : e.ErrorType;
        var billed = Metering.BilledDuration(took);
        return new InvokeResult
        {
            RequestId = requestId,
            Status = InvokeStatus.Ok,
            Payload = ErrorPayload(errorType, e.Message),
            FunctionError = "Unhandled",
            ErrorType = errorType,
            LogTail = Tail(e.LogTail),
            InitDuration = took,
            Duration = took,
            BilledDuration = billed,
            StartKind = def.SnapshotStart ? StartKind.SnapshotCold : StartKind.BootCold,
            MemoryMib = def.MemoryMib,
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

    private static ReadOnlyMemory<byte> ErrorPayload(string errorType, string message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("errorType", errorType);
            w.WriteString("errorMessage", message);
            w.WriteEndObject();
        }
        return buffer.WrittenMemory;
    }
}
