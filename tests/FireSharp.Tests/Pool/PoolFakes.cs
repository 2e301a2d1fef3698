using System.Collections.Concurrent;
using System.Text;
using FireSharp.Pool;

namespace FireSharp.Tests.Pool;

/// <summary>A clock that moves only when told; due timers fire synchronously inside <see cref="Advance"/>.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly List<ManualTimer> _timers = [];
    private DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override DateTimeOffset GetUtcNow() { lock (_lock) return _now; }
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    public override long GetTimestamp() { lock (_lock) return _now.UtcTicks; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var t = new ManualTimer(this, callback, state);
        t.Change(dueTime, period);
        return t;
    }

    public void Advance(TimeSpan by)
    {
        DateTimeOffset target;
        lock (_lock) target = _now + by;
        while (true)
        {
            ManualTimer? next = null;
            lock (_lock)
            {
                foreach (var t in _timers)
                    if (t.Due is { } d && d <= target && (next is null || d < next.Due)) next = t;
                if (next is null) { _now = target; return; }
                if (next.Due > _now) _now = next.Due.Value;
                next.Due = next.Period > TimeSpan.Zero ? next.Due + next.Period : null;
                if (next.Due is null) _timers.Remove(next);
            }
            next.Callback(next.State);
        }
    }

    /// <summary>Completes once a timer is due exactly <paramref name="dueIn"/> from now (liveness wait, no polling).</summary>
    public async Task WaitForTimerAsync(TimeSpan dueIn)
    {
        while (true)
        {
            Task changed;
            lock (_lock)
            {
                if (_timers.Any(t => t.Due == _now + dueIn)) return;
                changed = _changed.Task;
            }
            await changed;
        }
    }

    private void Changed(ManualTimer t, TimeSpan due, TimeSpan period)
    {
        TaskCompletionSource old;
        lock (_lock)
        {
            _timers.Remove(t);
            t.Period = period;
            t.Due = due == Timeout.InfiniteTimeSpan ? null : _now + due;
            if (t.Due is not null) _timers.Add(t);
            old = _changed;
            _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        old.TrySetResult();
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public TimerCallback Callback { get; } = callback;
        public object? State { get; } = state;
        public DateTimeOffset? Due { get; set; }
        public TimeSpan Period { get; set; }
        public bool Change(TimeSpan dueTime, TimeSpan period) { owner.Changed(this, dueTime, period); return true; }
        public void Dispose() => owner.Changed(this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
    }
}

/// <summary>Counts events; tasks wait for a count to be reached (no polling).</summary>
internal sealed class AsyncCounter
{
    private readonly Lock _lock = new();
    private readonly List<(int Target, TaskCompletionSource Tcs)> _waiters = [];
    private int _count;

    public int Value { get { lock (_lock) return _count; } }

    public void Increment()
    {
        List<TaskCompletionSource> done = [];
        lock (_lock)
        {
            _count++;
            _waiters.RemoveAll(w => { bool hit = _count >= w.Target; if (hit) done.Add(w.Tcs); return hit; });
        }
        foreach (var t in done) t.TrySetResult();
    }

    public Task WaitForAsync(int target)
    {
        lock (_lock)
        {
            if (_count >= target) return Task.CompletedTask;
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((target, tcs));
            return tcs.Task;
        }
    }
}

internal delegate Task<VmInvokeOutcome> FakeBehavior(FakeVm vm, VmInvokeRequest request, CancellationToken cancellationToken);

/// <summary>A scriptable VM factory: how creation goes, what each invocation does, and counts of everything.</summary>
internal sealed class FakeFactory : IFunctionVmFactory
{
    private int _next;
    public ConcurrentQueue<FakeVm> Vms { get; } = new();
    public ConcurrentQueue<(string Name, string? Keep)> Discards { get; } = new();
    public AsyncCounter Invocations { get; } = new();
    public AsyncCounter CreateCalls { get; } = new();
    public StartKind CreatedAs { get; set; } = StartKind.SnapshotCold;
    public TimeSpan InitDuration { get; set; } = TimeSpan.FromMilliseconds(120);

    /// <summary>Runs before each VM is made; may await a gate or throw <see cref="FunctionInitException"/>.</summary>
    public Func<FunctionDefinition, CancellationToken, Task>? OnCreate { get; set; }

    /// <summary>What every invocation does (default: echo the VM id, success, 10 ms).</summary>
    public FakeBehavior Behavior { get; set; } = (vm, _, _) => Task.FromResult(Ok(vm));

    public int Created => Vms.Count;
    public int Violations; // a VM saw two invocations at once

    public static VmInvokeOutcome Ok(FakeVm vm, TimeSpan? duration = null) => new()
    {
        Status = VmInvokeStatus.Success,
        Payload = Encoding.UTF8.GetBytes(vm.Id),
        Duration = duration ?? TimeSpan.FromMilliseconds(10),
        MaxMemoryUsedBytes = 40 << 20,
    };

    public static VmInvokeOutcome Fail(VmInvokeStatus status, bool unhandled = true, string? errorType = null) => new()
    {
        Status = status,
        Unhandled = unhandled,
        ErrorType = errorType,
        Duration = TimeSpan.FromMilliseconds(5),
    };

    public async Task<IFunctionVm> CreateAsync(FunctionDefinition definition, CancellationToken cancellationToken)
    {
        CreateCalls.Increment();
        if (OnCreate is { } hook) await hook(definition, cancellationToken);
        var vm = new FakeVm(this, $"vm-{Interlocked.Increment(ref _next)}", definition, CreatedAs, InitDuration);
        Vms.Enqueue(vm);
        return vm;
    }

    public Task DiscardSnapshotsAsync(string functionName, string? keepVersion, CancellationToken cancellationToken)
    {
        Discards.Enqueue((functionName, keepVersion));
        return Task.CompletedTask;
    }

    public FakeVm Vm(string id) => Vms.Single(v => v.Id == id);
}

internal sealed class FakeVm(FakeFactory factory, string id, FunctionDefinition definition, StartKind createdAs, TimeSpan initDuration)
    : IFunctionVm
{
    private int _busy;
    public string Id { get; } = id;
    public FunctionDefinition Definition { get; } = definition;
    public StartKind CreatedAs { get; } = createdAs;
    public TimeSpan InitDuration { get; } = initDuration;
    public int InvokeCount;
    public int ShutdownCount;
    public int DisposeCount;
    public ConcurrentQueue<VmInvokeRequest> Requests { get; } = new();
    public TaskCompletionSource ShutdownCalled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource Disposed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task<VmInvokeOutcome> InvokeAsync(VmInvokeRequest request, CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _busy) != 1) Interlocked.Increment(ref factory.Violations);
        if (Volatile.Read(ref DisposeCount) != 0) Interlocked.Increment(ref factory.Violations);
        Interlocked.Increment(ref InvokeCount);
        Requests.Enqueue(request);
        factory.Invocations.Increment();
        try { return await factory.Behavior(this, request, cancellationToken); }
        finally { Interlocked.Decrement(ref _busy); }
    }

    public Task ShutdownAsync(string reason, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref ShutdownCount);
        ShutdownCalled.TrySetResult();
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        Interlocked.Increment(ref DisposeCount);
        Disposed.TrySetResult();
        return ValueTask.CompletedTask;
    }
}

internal static class PoolTestSupport
{
    /// <summary>Generous liveness bound for waits on background work; never a timing assertion.</summary>
    public static readonly TimeSpan LiveBound = TimeSpan.FromSeconds(60);

    public static FunctionDefinition Def(string name, int memoryMib = 128, TimeSpan? timeout = null) => new()
    {
        Name = name,
        Version = "ignored",
        KernelPath = "/k/vmlinux",
        RootfsPath = "/k/rootfs.ext4",
        CodeImagePath = $"/code/{name}.ext4",
        Handler = "index.handler",
        MemoryMib = memoryMib,
        Timeout = timeout ?? TimeSpan.FromSeconds(3),
    };

    public static byte[] Bytes(string s) => Encoding.UTF8.GetBytes(s);
    public static string Text(ReadOnlyMemory<byte> b) => Encoding.UTF8.GetString(b.Span);

    public static async Task<T> Live<T>(this Task<T> task) => await task.WaitAsync(LiveBound);
    public static async Task Live(this Task task) => await task.WaitAsync(LiveBound);
}
