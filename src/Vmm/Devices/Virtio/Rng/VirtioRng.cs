using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Virtio.Rng;

/// <summary>
/// virtio-rng (virtio 1.x, "Entropy Device", device id 4): one request queue, no feature bits, no config space.
/// Each request is a chain of device-writable buffers, which the device fills from the host's CSPRNG
/// (<see cref="RandomNumberGenerator"/>, getrandom(2)) straight in guest memory, at most
/// <see cref="MaxBytesPerRequest"/> bytes of it; the used length says how many. Linux's virtio_rng driver shows it
/// as <c>virtio_rng.0</c> in /sys/class/misc/hw_random and feeds the kernel's pool from it.
/// <para>
/// A hostile driver: a chain with device-readable buffers, or without a writable byte, is returned unused and
/// counted (the first is logged); a chain of any length costs at most <see cref="MaxBytesPerRequest"/> bytes of
/// host work; malformed rings (loops, addresses outside RAM) are the transport's and break the queue.
/// </para>
/// <para>
/// Every request first asks the <see cref="IEntropyRateLimiter"/> (the hook for a rate limiter; unlimited by
/// default). A refused request goes back to the queue untouched and is retried when the limiter says so.
/// </para>
/// </summary>
public sealed class VirtioRng : IVirtioDevice, IDisposable
{
    public const ushort DefaultQueueSize = 256;

    /// <summary>Most bytes served for one request, whatever the chain's length (Linux's driver asks for small buffers).</summary>
    public const int MaxBytesPerRequest = 64 * 1024;

    private const byte StateFormat = 1;

    private readonly IEntropyRateLimiter _limiter;
    private readonly ILogger _logger;
    private int _badLogged;
    private long _requests, _bytes, _malformed, _deferred;

    public VirtioRng(IEntropyRateLimiter? rateLimiter = null, ILogger? logger = null, ushort queueSize = DefaultQueueSize)
    {
        _limiter = rateLimiter ?? UnlimitedEntropy.Instance;
        _logger = logger ?? NullLogger.Instance;
        MaxQueueSize = queueSize;
    }

    public VirtioDeviceType DeviceType => VirtioDeviceType.Entropy;
    public string Id => "virtio-rng";
    public int QueueCount => 1;
    public ushort MaxQueueSize { get; }
    public ulong DeviceFeatures => 0;

    /// <summary>Requests served, bytes written, malformed requests returned unused, requests the limiter deferred.</summary>
    public (long Requests, long Bytes, long Malformed, long Deferred) Counters =>
        (Interlocked.Read(ref _requests), Interlocked.Read(ref _bytes), Interlocked.Read(ref _malformed), Interlocked.Read(ref _deferred));

    /// <summary>No config space: reads as zeros.</summary>
    public void ReadConfig(uint offset, Span<byte> data) => data.Clear();

    public void WriteConfig(uint offset, ReadOnlySpan<byte> data) { }

    public void Activate(ulong negotiatedFeatures) { }

    public void Reset() { }

    public void ProcessQueue(VirtqueueContext queue)
    {
        while (queue.TryNext(out var chain))
        {
            if (chain.FirstWritable != 0 || chain.WritableLength == 0)
            {
                Malformed(chain.FirstWritable != 0 ? "device-readable buffers in an entropy request" : "no device-writable buffer");
                queue.Complete(0);
                continue;
            }
            int length = (int)Math.Min(chain.WritableLength, MaxBytesPerRequest);
            if (!_limiter.TryAcquire(length, queue.Kick))
            {
                Interlocked.Increment(ref _deferred);
                queue.Defer();
                return;
            }
            int written = 0;
            foreach (var range in chain.Ranges(writable: true, offset: 0, (ulong)length))
            {
                RandomNumberGenerator.Fill(queue.Memory.GetSpan(range.Address, range.Length));
                written += range.Length;
            }
            Interlocked.Increment(ref _requests);
            Interlocked.Add(ref _bytes, written);
            queue.Complete((uint)written);
        }
    }

    private void Malformed(string reason)
    {
        Interlocked.Increment(ref _malformed);
        if (Interlocked.Exchange(ref _badLogged, 1) == 0) RngLog.BadRequest(_logger, Id, reason);
    }

    /// <summary>Format 1: the format byte alone (the device keeps no state of its own; the queue is the transport's).</summary>
    public byte[] SaveState() => [StateFormat];

    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 1 || state[0] != StateFormat)
            throw new InvalidDataException($"{Id}: expected state format {StateFormat} in 1 byte, got {state.Length} bytes");
    }

    public void Dispose()
    {
        var (requests, bytes, malformed, deferred) = Counters;
        RngLog.Counters(_logger, Id, requests, bytes, malformed, deferred);
    }
}
