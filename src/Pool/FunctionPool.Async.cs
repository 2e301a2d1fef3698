namespace FireSharp.Pool;

// Event invocations: a bounded queue, background workers, retries with delays, a queryable history.
public sealed partial class FunctionPool
{
    private sealed class AsyncWork(string requestId, string name, ReadOnlyMemory<byte> payload, DateTimeOffset acceptedAt)
    {
        public string RequestId { get; } = requestId;
        public string Name { get; } = name;
        public ReadOnlyMemory<byte> Payload { get; } = payload;
        public int Attempts { get; set; }
        public AsyncInvocationRecord Record { get; set; } = new()
        {
            RequestId = requestId,
            FunctionName = name,
            State = AsyncInvocationState.Queued,
            AcceptedAt = acceptedAt,
        };
        public TaskCompletionSource<AsyncInvocationRecord> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly Dictionary<string, AsyncWork> _async = new(StringComparer.Ordinal);
    private readonly Queue<string> _asyncFinished = new();

    private InvokeResult Enqueue(string name, ReadOnlyMemory<byte> payload)
    {
        CheckPayload(payload, InvocationType.Event);
        var requestId = NewRequestId();
        lock (_lock)
        {
            ThrowIfDisposed();
            var fn = GetLiveLocked(name);
            // The caller may reuse its buffer once we return.
            var work = new AsyncWork(requestId, name, payload.ToArray(), _time.GetUtcNow());
            if (!_queue.Writer.TryWrite(work))
            {
                fn.Stats.Throttles++;
                _totals.Throttles++;
                throw new FunctionThrottledException(name, ThrottleReason.AsyncQueueFull, _options.AsyncQueueCapacity, _options.ThrottleRetryAfter);
            }
            _async[requestId] = work;
            fn.Stats.AsyncAccepted++;
        }
        return new InvokeResult { RequestId = requestId, Status = InvokeStatus.Accepted };
    }

    /// <summary>The state of an Event invocation: queued, running, waiting to retry, or finished (the last <see cref="PoolOptions.AsyncHistory"/>).</summary>
    public AsyncInvocationRecord? GetAsyncInvocation(string requestId)
    {
        lock (_lock) return _async.TryGetValue(requestId, out var w) ? w.Record : null;
    }

    /// <summary>Completes when the Event invocation succeeded or failed its last attempt.</summary>
    /// <exception cref="KeyNotFoundException">no such request id (or it aged out of the history).</exception>
    public Task<AsyncInvocationRecord> WaitForAsyncInvocationAsync(string requestId, CancellationToken cancellationToken = default)
    {
        Task<AsyncInvocationRecord> done;
        lock (_lock)
        {
            if (!_async.TryGetValue(requestId, out var w)) throw new KeyNotFoundException($"no Event invocation {requestId}");
            done = w.Done.Task;
        }
        return done.WaitAsync(cancellationToken);
    }

    private async Task AsyncWorkerAsync()
    {
        try
        {
            await foreach (var work in _queue.Reader.ReadAllAsync(_lifetime.Token).ConfigureAwait(false))
                await AttemptAsync(work).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_lifetime.IsCancellationRequested) { }
    }

    private async Task AttemptAsync(AsyncWork work)
    {
        int attempt;
        lock (_lock)
        {
            attempt = ++work.Attempts;
            work.Record = work.Record with { State = AsyncInvocationState.Running, Attempts = attempt };
        }

        InvokeResult? result = null;
        string? error = null;
        bool retryable;
        try
        {
            result = await RunAsync(work.Name, work.Payload, work.RequestId, _lifetime.Token).ConfigureAwait(false);
            retryable = result.FunctionError is not null;
        }
        catch (FunctionThrottledException e) { error = e.Message; retryable = true; }
        catch (FunctionPoolException e) { error = e.Message; retryable = false; } // deleted, gone
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException && _lifetime.IsCancellationRequested)
        {
            FinishAsync(work, AsyncInvocationState.Failed, null, "pool disposed");
            return;
        }
        catch (Exception e) { error = e.Message; retryable = true; } // factory/VM service error

        if (result is not null && result.FunctionError is null)
        {
            FinishAsync(work, AsyncInvocationState.Succeeded, result, null);
            return;
        }
        if (!retryable || attempt > _options.AsyncMaxRetries)
        {
            FinishAsync(work, AsyncInvocationState.Failed, result, error);
            return;
        }

        var delays = _options.AsyncRetryDelays;
        var delay = delays.Count == 0 ? TimeSpan.Zero : delays[Math.Min(attempt, delays.Count) - 1];
        lock (_lock)
        {
            work.Record = work.Record with { State = AsyncInvocationState.RetryPending, LastResult = result, LastError = error };
            if (_functions.TryGetValue(work.Name, out var fn)) fn.Stats.AsyncRetries++;
        }
        Track(async () =>
        {
            try { await Task.Delay(delay, _time, _lifetime.Token).ConfigureAwait(false); }
            catch (OperationCanceledException)
            {
                FinishAsync(work, AsyncInvocationState.Failed, result, "pool disposed");
                return;
            }
            await AttemptAsync(work).ConfigureAwait(false);
        });
    }

    private void FinishAsync(AsyncWork work, AsyncInvocationState state, InvokeResult? result, string? error)
    {
        AsyncInvocationRecord record;
        lock (_lock)
        {
            record = work.Record = work.Record with
            {
                State = state,
                FinishedAt = _time.GetUtcNow(),
                LastResult = result,
                LastError = error,
            };
            if (_functions.TryGetValue(work.Name, out var fn))
            {
                if (state == AsyncInvocationState.Succeeded) fn.Stats.AsyncSucceeded++;
                else fn.Stats.AsyncFailed++;
            }
            _async[work.RequestId] = work;
            _asyncFinished.Enqueue(work.RequestId);
            while (_asyncFinished.Count > Math.Max(0, _options.AsyncHistory))
                _async.Remove(_asyncFinished.Dequeue());
        }
        work.Done.TrySetResult(record);
    }
}
