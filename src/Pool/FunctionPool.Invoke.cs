using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace FireSharp.Pool;

// Invocation: admission, VM choice, deadline, outcome → result, release.
public sealed partial class FunctionPool
{
    private const int LogTailBytes = 4096;

    /// <summary>
    /// Invokes a function. RequestResponse runs it and returns its result (function errors, timeouts and init errors
    /// are results with <see cref="InvokeResult.FunctionError"/> set, not exceptions). Event validates, queues and
    /// returns <see cref="InvokeStatus.Accepted"/> at once (see <see cref="GetAsyncInvocation"/>). DryRun only validates.
    /// </summary>
    /// <exception cref="FunctionNotFoundException"/>
    /// <exception cref="FunctionDeletingException"/>
    /// <exception cref="FunctionThrottledException">a concurrency limit or the Event queue is full; nothing ran.</exception>
    /// <exception cref="RequestTooLargeException"/>
    /// <exception cref="OperationCanceledException">the caller cancelled: a running invocation is abandoned and its VM recycled.</exception>
    /// <exception cref="ObjectDisposedException"/>
    public Task<InvokeResult> InvokeAsync(string name, ReadOnlyMemory<byte> payload,
        InvocationType invocationType = InvocationType.RequestResponse, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        switch (invocationType)
        {
            case InvocationType.Event:
                return Task.FromResult(Enqueue(name, payload));
            case InvocationType.DryRun:
                CheckPayload(payload, InvocationType.DryRun);
                lock (_lock)
                {
                    ThrowIfDisposed();
                    GetLiveLocked(name);
                }
                return Task.FromResult(new InvokeResult { RequestId = NewRequestId(), Status = InvokeStatus.NoContent });
            case InvocationType.RequestResponse:
                CheckPayload(payload, InvocationType.RequestResponse);
                return RunAsync(name, payload, NewRequestId(), cancellationToken);
            default:
                throw new InvalidFunctionRequestException("InvocationType", $"unknown invocation type {invocationType}");
        }
    }

    private void CheckPayload(ReadOnlyMemory<byte> payload, InvocationType type)
    {
        int limit = type == InvocationType.Event ? _options.MaxEventPayloadBytes : _options.MaxRequestResponsePayloadBytes;
        if (payload.Length > limit) throw new RequestTooLargeException(payload.Length, limit, type);
    }

    private static string NewRequestId() => Guid.NewGuid().ToString();

    /// <summary>One attempt: admit, get a VM, run, release. Throws only for throttles, missing functions, cancellation, factory failures.</summary>
    private async Task<InvokeResult> RunAsync(string name, ReadOnlyMemory<byte> payload, string requestId, CancellationToken ct)
    {
        FunctionEntry fn;
        VersionEntry ver;
        PooledVm? vm;
        lock (_lock)
        {
            ThrowIfDisposed();
            fn = GetLiveLocked(name);
            if (!_ledger.TryAcquire(fn.Slot, out var reason, out int limit))
            {
                fn.Stats.Throttles++;
                _totals.Throttles++;
                throw new FunctionThrottledException(name, reason, limit, _options.ThrottleRetryAfter);
            }
            ver = fn.Current;
            vm = ver.TakeIdle();
            if (vm is not null) ver.Busy.Add(vm);
            else ver.CreatingForInvoke++;
        }

        var def = ver.Definition;
        StartKind kind = StartKind.Warm;
        TimeSpan? initDuration = null;
        if (vm is null)
        {
            long createStart = _time.GetTimestamp();
            IFunctionVm created;
            try
            {
                using var createCts = CancellationTokenSource.CreateLinkedTokenSource(ct, _lifetime.Token);
                created = await _factory.CreateAsync(def, createCts.Token).ConfigureAwait(false);
            }
            catch (FunctionInitException e)
            {
                var took = _time.GetElapsedTime(createStart);
                var result = InitErrorResult(requestId, def, e, took);
                ReleaseWithoutVm(fn, ver, result);
                return result;
            }
            catch
            {
                ReleaseWithoutVm(fn, ver, null);
                throw;
            }
            lock (_lock)
            {
                ver.CreatingForInvoke--;
                vm = new PooledVm(created, ver, provisioned: false);
                ver.Busy.Add(vm);
            }
            kind = created.CreatedAs == StartKind.Warm ? StartKind.BootCold : created.CreatedAs;
            initDuration = created.InitDuration;
        }

        var now = _time.GetUtcNow();
        var request = new VmInvokeRequest(requestId, payload, now + def.Timeout, FunctionArn(def.Name), NewTraceId(now));
        using var hostDeadline = new CancellationTokenSource(def.Timeout + _options.TimeoutGrace, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, hostDeadline.Token, _lifetime.Token);
        long start = _time.GetTimestamp();
        VmInvokeOutcome outcome;
        Task<VmInvokeOutcome>? running = null;
        try
        {
            running = vm.Vm.InvokeAsync(request, linked.Token);
            outcome = await running.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested || _lifetime.IsCancellationRequested)
        {
            Observe(running);
            Release(fn, vm, reuse: false, null, VmInvokeStatus.Crashed);
            throw;
        }
        catch (OperationCanceledException) when (hostDeadline.IsCancellationRequested)
        {
            Observe(running);
            outcome = new VmInvokeOutcome
            {
                Status = VmInvokeStatus.Timeout,
                Unhandled = true,
                ErrorType = "Sandbox.Timedout",
                Duration = def.Timeout,
            };
        }
        catch (Exception e)
        {
            outcome = new VmInvokeOutcome
            {
                Status = VmInvokeStatus.Crashed,
                Unhandled = true,
                ErrorType = "Runtime.ExitError",
                LogTail = e.Message,
                Duration = _time.GetElapsedTime(start),
            };
        }

        var duration = outcome.Duration > TimeSpan.Zero ? outcome.Duration : _time.GetElapsedTime(start);
        var invokeResult = BuildResult(requestId, def, outcome, kind, initDuration, duration);
        bool reuse = outcome.Status == VmInvokeStatus.Success
                     || (outcome.Status == VmInvokeStatus.FunctionError && !outcome.Unhandled);
        Release(fn, vm, reuse, invokeResult, outcome.Status);
        return invokeResult;
    }

    private static void Observe(Task? task) =>
        task?.ContinueWith(static t => _ = t.Exception, CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    /// <summary>Ends an invocation whose VM creation failed.</summary>
    private void ReleaseWithoutVm(FunctionEntry fn, VersionEntry ver, InvokeResult? initError)
    {
        var deferred = new Deferred();
        lock (_lock)
        {
            ver.CreatingForInvoke--;
            _ledger.Release(fn.Slot);
            if (initError is not null)
            {
                fn.Stats.InitErrors++;
                Count(fn, initError);
            }
            CheckDrainedLocked(ver, deferred);
        }
        deferred.Run(this);
    }

    /// <summary>Ends an invocation: the VM goes idle (reuse, current version), is shut down (old version) or recycled.</summary>
    private void Release(FunctionEntry fn, PooledVm vm, bool reuse, InvokeResult? result, VmInvokeStatus status)
    {
        var deferred = new Deferred();
        var ver = vm.Version;
        lock (_lock)
        {
            ver.Busy.Remove(vm);
            _ledger.Release(fn.Slot);
            if (result is not null)
            {
                if (status == VmInvokeStatus.Timeout) fn.Stats.Timeouts++;
                Count(fn, result);
            }
            if (reuse && !ver.Draining && !_disposed)
            {
                vm.IdleSince = _time.GetUtcNow();
                ver.Idle.Add(vm);
            }
            else if (reuse)
            {
                StopLocked(vm, graceful: true, ver.Function.State == FunctionState.Deleting ? "function deleted" : _disposed ? "pool disposed" : "function updated", deferred);
            }
            else
            {
                PoolLog.Recycled(_logger, fn.Name, vm.Vm.Id, status);
                StopLocked(vm, graceful: false, "recycled", deferred);
                if (vm.Provisioned && !ver.Draining) EnsureProvisionedLocked(fn, deferred);
            }
            CheckDrainedLocked(ver, deferred);
        }
        deferred.Run(this);
    }

    private void Count(FunctionEntry fn, InvokeResult r)
    {
        var s = fn.Stats;
        s.Invocations++;
        _totals.Invocations++;
        if (r.FunctionError is not null) { s.Errors++; _totals.Errors++; }
        s.CountStart(r.StartKind);
        s.GbSeconds += r.GbSeconds;
        _totals.GbSeconds += r.GbSeconds;
        s.AddDuration(r.Duration);
    }

    private InvokeResult BuildResult(string requestId, FunctionDefinition def, VmInvokeOutcome o, StartKind kind,
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
        var billed = BilledDuration(duration);
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
            GbSeconds = GbSeconds(billed, def.MemoryMib),
            Version = def.Version,
            VmStatus = o.Status,
        };
    }

    private static InvokeResult InitErrorResult(string requestId, FunctionDefinition def, FunctionInitException e, TimeSpan took)
    {
        string errorType = string.IsNullOrEmpty(e.ErrorType) ? "Runtime.InitError" : e.ErrorType;
        var billed = BilledDuration(took);
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
            GbSeconds = GbSeconds(billed, def.MemoryMib),
            Version = def.Version,
        };
    }

    /// <summary>Rounded up to the next whole millisecond (Lambda bills in 1 ms steps).</summary>
    internal static TimeSpan BilledDuration(TimeSpan duration)
    {
        if (duration <= TimeSpan.Zero) return TimeSpan.Zero;
        long ms = (duration.Ticks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
        return TimeSpan.FromMilliseconds(ms);
    }

    /// <summary>Billed seconds × memory in GiB, exact in decimal.</summary>
    internal static decimal GbSeconds(TimeSpan billed, int memoryMib) =>
        (decimal)(billed.Ticks / TimeSpan.TicksPerMillisecond) / 1000m * memoryMib / 1024m;

    /// <summary>The end of <paramref name="s"/> that fits in 4 KiB of UTF-8, cut at a character boundary.</summary>
    internal static string Tail(string s)
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

    private string FunctionArn(string name) => $"arn:aws:lambda:{_options.Region}:{_options.AccountId}:function:{name}";

    // X-Ray's format: Root=1-<8 hex digits of epoch seconds>-<24 hex digits>.
    private static string NewTraceId(DateTimeOffset now) =>
        string.Create(CultureInfo.InvariantCulture,
            $"Root=1-{now.ToUnixTimeSeconds():x8}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12))}");
}
