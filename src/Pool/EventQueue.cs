using System.Threading.Channels;

namespace FireSharp.Pool;

/// <summary>
/// Event invocations: a bounded queue (full = throttled), background workers that run each through the
/// <see cref="Invoker"/>, retries after delays, and a history queryable by request id.
/// </summary>
internal sealed class EventQueue
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

    private readonly PoolContext _pool;
    private readonly Invoker _invoker;
    private readonly Channel<AsyncWork> _queue;
    private readonly Task[] _workers;
    // Under the pool lock.
    private readonly Dictionary<string, AsyncWork> _async = new(StringComparer.Ordinal);
    private readonly Queue<string> _asyncFinished = new();

    public EventQueue(PoolContext pool, Invoker invoker)
    {
        _pool = pool;
        _invoker = invoker;
        _queue = Channel.CreateBounded<AsyncWork>(new BoundedChannelOptions(pool.Options.AsyncQueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full: the caller is throttled
            SingleReader = false,
            SingleWriter = false,
        });
        _workers = new Task[pool.Options.AsyncWorkers];
        for (int i = 0; i < _workers.Length; i++) _workers[i] = Task.Run(WorkerAsync);
    }

    private PoolOptions Options => _pool.Options;

    /// <summary>Invocations waiting for a worker.</summary>
    public int Queued => _queue.Reader.Count;

    public InvokeResult Enqueue(string name, ReadOnlyMemory<byte> payload)
    {
        _invoker.CheckPayload(payload, InvocationType.Event);
        var requestId = Invoker.NewRequestId();
        lock (_pool.Lock)
        {
            _pool.ThrowIfDisposed();
            var fn = _pool.GetLiveLocked(name);
            // The caller may reuse its buffer once we return.
            var work = new AsyncWork(requestId, name, payload.ToArray(), _pool.Time.GetUtcNow());
            if (!_queue.Writer.TryWrite(work))
            {
                _pool.Totals.CountThrottle(fn, ThrottleReason.AsyncQueueFull);
                throw new FunctionThrottledException(name, ThrottleReason.AsyncQueueFull, Options.AsyncQueueCapacity, Options.ThrottleRetryAfter);
            }
            _async[requestId] = work;
            fn.Stats.AsyncAccepted++;
        }
        return new InvokeResult { RequestId = requestId, Status = InvokeStatus.Queued };
    }

    public AsyncInvocationRecord? Get(string requestId)
    {
        lock (_pool.Lock) return _async.TryGetValue(requestId, out var w) ? w.Record : null;
    }

    public Task<AsyncInvocationRecord> WaitAsync(string requestId, CancellationToken cancellationToken)
    {
        Task<AsyncInvocationRecord> done;
        lock (_pool.Lock)
        {
            if (!_async.TryGetValue(requestId, out var w)) throw new KeyNotFoundException($"no Event invocation {requestId}");
            done = w.Done.Task;
        }
        return done.WaitAsync(cancellationToken);
    }

    /// <summary>Takes no more work. Call once disposal has started (<see cref="PoolContext.Disposed"/>).</summary>
    public void Close() => _queue.Writer.TryComplete();

    /// <summary>After the pool's lifetime is cancelled: waits for the workers, then fails what is still queued.</summary>
    public async Task DrainAsync()
    {
        try { await Task.WhenAll(_workers).ConfigureAwait(false); } catch { /* cancelled */ }
        while (_queue.Reader.TryRead(out var work)) Finish(work, AsyncInvocationState.Failed, null, "pool disposed");
    }

    private async Task WorkerAsync()
    {
        try
        {
            await foreach (var work in _queue.Reader.ReadAllAsync(_pool.Lifetime).ConfigureAwait(false))
                await AttemptAsync(work).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_pool.IsStopping) { }
    }

    private async Task AttemptAsync(AsyncWork work)
    {
        int attempt;
        lock (_pool.Lock)
        {
            attempt = ++work.Attempts;
            work.Record = work.Record with { State = AsyncInvocationState.Running, Attempts = attempt };
        }

        InvokeResult? result = null;
        string? error = null;
        bool retryable;
        try
        {
            result = await _invoker.RunAsync(work.Name, work.Payload, work.RequestId, _pool.Lifetime).ConfigureAwait(false);
            retryable = result.FunctionError is not null;
        }
        catch (FunctionThrottledException e) { error = e.Message; retryable = true; }
        catch (FunctionPoolException e) { error = e.Message; retryable = false; } // deleted, gone
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException && _pool.IsStopping)
        {
            Finish(work, AsyncInvocationState.Failed, null, "pool disposed");
            return;
        }
        catch (Exception e) { error = e.Message; retryable = true; } // factory/VM service error

        if (result is not null && result.FunctionError is null)
        {
            Finish(work, AsyncInvocationState.Succeeded, result, null);
            return;
        }
        if (!retryable || attempt > Options.AsyncMaxRetries)
        {
            Finish(work, AsyncInvocationState.Failed, result, error);
            return;
        }

        var delays = Options.AsyncRetryDelays;
        var delay = delays.Count == 0 ? TimeSpan.Zero : delays[Math.Min(attempt, delays.Count) - 1];
        lock (_pool.Lock)
        {
            work.Record = work.Record with { State = AsyncInvocationState.RetryPending, LastResult = result, LastError = error };
            if (_pool.Functions.TryGetValue(work.Name, out var fn)) fn.Stats.AsyncRetries++;
        }
        _pool.Background.Track(async () =>
        {
            try { await Task.Delay(delay, _pool.Time, _pool.Lifetime).ConfigureAwait(false); }
            catch (OperationCanceledException)
            {
                Finish(work, AsyncInvocationState.Failed, result, "pool disposed");
                return;
            }
            await AttemptAsync(work).ConfigureAwait(false);
        });
    }

    private void Finish(AsyncWork work, AsyncInvocationState state, InvokeResult? result, string? error)
    {
        AsyncInvocationRecord record;
        lock (_pool.Lock)
        {
            record = work.Record = work.Record with
            {
                State = state,
                FinishedAt = _pool.Time.GetUtcNow(),
                LastResult = result,
                LastError = error,
            };
            if (_pool.Functions.TryGetValue(work.Name, out var fn))
            {
                if (state == AsyncInvocationState.Succeeded) fn.Stats.AsyncSucceeded++;
                else fn.Stats.AsyncFailed++;
            }
            _async[work.RequestId] = work;
            _asyncFinished.Enqueue(work.RequestId);
            while (_asyncFinished.Count > Math.Max(0, Options.AsyncHistory))
                _async.Remove(_asyncFinished.Dequeue());
        }
        work.Done.TrySetResult(record);
    }
}
