namespace FireSharp.Devices.Virtio.Rng;

/// <summary>
/// The rate-limit hook of <see cref="VirtioRng"/>: asked before every request is served, with the number of bytes
/// it would take. Firecracker limits its entropy device with token buckets (bytes and requests, refilled over
/// time); such a limiter goes here. The default, <see cref="UnlimitedEntropy"/>, grants everything.
/// </summary>
public interface IEntropyRateLimiter
{
    /// <summary>
    /// Whether <paramref name="bytes"/> of entropy (one request) may be served now; true takes them from the budget.
    /// False defers the request: it stays in the queue, untouched, and the device takes it again when
    /// <paramref name="retry"/> is called (any thread, any number of times; the limiter calls it once the budget
    /// is back) or when the driver next notifies the queue. Nothing is dropped.
    /// </summary>
    bool TryAcquire(int bytes, Action retry);
}

/// <summary>No limit: every request is served at once.</summary>
public sealed class UnlimitedEntropy : IEntropyRateLimiter
{
    public static readonly UnlimitedEntropy Instance = new();

    private UnlimitedEntropy() { }

    public bool TryAcquire(int bytes, Action retry) => true;
}
