using System.Text;

namespace FireSharp.Devices.Legacy;

/// <summary>
/// An in-memory sink for tests and for capturing a guest's console: keeps the bytes, and lets a
/// caller wait for a piece of text to appear.
/// </summary>
/// <remarks>
/// Thread-safe. Keeps at most <c>maxBytes</c> bytes; later output is dropped and counted in
/// <see cref="DroppedBytes"/> (a waiter will not find text that was dropped). Text is matched as
/// UTF-8 bytes, so a match never depends on how the guest split its writes.
/// </remarks>
public sealed class MemorySerialSink : ISerialSink
{
    /// <summary>Default bound on retained output.</summary>
    public const int DefaultMaxBytes = 16 * 1024 * 1024;

    private readonly object _gate = new();
    private readonly int _maxBytes;
    private readonly List<Waiter> _waiters = [];
    private byte[] _buffer = new byte[4096];
    private int _length;
    private long _dropped;

    public MemorySerialSink(int maxBytes = DefaultMaxBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1);
        _maxBytes = maxBytes;
    }

    /// <summary>Number of bytes retained.</summary>
    public int Length
    {
        get { lock (_gate) { return _length; } }
    }

    /// <summary>Bytes discarded because <c>maxBytes</c> was reached.</summary>
    public long DroppedBytes
    {
        get { lock (_gate) { return _dropped; } }
    }

    public void Write(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return;
        }

        List<Waiter>? completed = null;
        lock (_gate)
        {
            int take = Math.Min(data.Length, _maxBytes - _length);
            _dropped += data.Length - take;
            if (take == 0)
            {
                return;
            }

            if (_length + take > _buffer.Length)
            {
                int size = Math.Min(_maxBytes, Math.Max(_buffer.Length * 2, _length + take));
                Array.Resize(ref _buffer, size);
            }

            data[..take].CopyTo(_buffer.AsSpan(_length));
            _length += take;

            for (int i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].Scan(_buffer.AsSpan(0, _length)))
                {
                    (completed ??= []).Add(_waiters[i]);
                    _waiters.RemoveAt(i);
                }
            }

            Monitor.PulseAll(_gate);
        }

        // Complete outside the lock; continuations run asynchronously anyway.
        if (completed is not null)
        {
            foreach (var waiter in completed)
            {
                waiter.Complete(true);
            }
        }
    }

    /// <summary>A copy of the retained bytes.</summary>
    public byte[] ToArray()
    {
        lock (_gate)
        {
            return _buffer.AsSpan(0, _length).ToArray();
        }
    }

    /// <summary>The retained bytes decoded as UTF-8 (invalid sequences become U+FFFD).</summary>
    public string GetText()
    {
        lock (_gate)
        {
            return Encoding.UTF8.GetString(_buffer, 0, _length);
        }
    }

    /// <summary>True if <paramref name="text"/> is already in the output.</summary>
    public bool Contains(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] needle = Encoding.UTF8.GetBytes(text);
        lock (_gate)
        {
            return _buffer.AsSpan(0, _length).IndexOf(needle) >= 0;
        }
    }

    /// <summary>Forgets the retained output (waiters keep waiting for new output).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _length = 0;
            foreach (var waiter in _waiters)
            {
                waiter.ResetScan();
            }
        }
    }

    /// <summary>
    /// Blocks until <paramref name="text"/> appears in the output (including output already
    /// there), the timeout passes (returns false) or the token is cancelled (throws).
    /// </summary>
    public bool WaitFor(string text, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        var scanner = new Waiter(Encoding.UTF8.GetBytes(text), null);
        var deadline = DateTime.UtcNow + timeout;
        using var registration = cancellationToken.Register(() =>
        {
            lock (_gate)
            {
                Monitor.PulseAll(_gate);
            }
        });

        lock (_gate)
        {
            while (true)
            {
                if (scanner.Scan(_buffer.AsSpan(0, _length)))
                {
                    return true;
                }

                cancellationToken.ThrowIfCancellationRequested();
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    return false;
                }

                Monitor.Wait(_gate, left);
            }
        }
    }

    /// <summary>
    /// Completes with true when <paramref name="text"/> appears in the output (including output
    /// already there), with false when the timeout passes; cancelled if the token is cancelled.
    /// </summary>
    public Task<bool> WaitForAsync(string text, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        var tcs = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiter = new Waiter(Encoding.UTF8.GetBytes(text), tcs);
        lock (_gate)
        {
            if (waiter.Scan(_buffer.AsSpan(0, _length)))
            {
                return Task.FromResult(true);
            }

            cancellationToken.ThrowIfCancellationRequested();
            _waiters.Add(waiter);
        }

        var timer = new CancellationTokenSource(timeout);
        var onTimeout = timer.Token.Register(() => Abandon(waiter, () => tcs.TrySetResult(false)));
        var onCancel = cancellationToken.Register(() => Abandon(waiter, () => tcs.TrySetCanceled(cancellationToken)));
        _ = tcs.Task.ContinueWith(_ =>
        {
            onTimeout.Dispose();
            onCancel.Dispose();
            timer.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return tcs.Task;
    }

    private void Abandon(Waiter waiter, Action complete)
    {
        lock (_gate)
        {
            _waiters.Remove(waiter);
        }

        complete();
    }

    /// <summary>Incremental substring search: each scan only looks at bytes it has not seen.</summary>
    private sealed class Waiter(byte[] needle, TaskCompletionSource<bool>? completion)
    {
        private int _scanned;

        public bool Scan(ReadOnlySpan<byte> output)
        {
            if (needle.Length == 0)
            {
                return true;
            }

            // Restart a little before the end of what was seen, so a match that straddles two
            // writes is found.
            int from = Math.Max(0, _scanned - (needle.Length - 1));
            _scanned = output.Length;
            return from < output.Length && output[from..].IndexOf(needle) >= 0;
        }

        public void ResetScan() => _scanned = 0;

        public void Complete(bool found) => completion?.TrySetResult(found);
    }
}
