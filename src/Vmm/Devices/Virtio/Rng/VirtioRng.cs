using System.Security.Cryptography;
using FireSharp.Devices.RateLimiting;
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
/// Every request first asks the device's token-bucket <see cref="RateLimiter"/> (one op and its bytes), then the
/// <see cref="IEntropyRateLimiter"/> hook (unlimited by default). A refused request goes back to the queue
/// untouched and is retried when the limiter's timer (or the hook) says so.
/// </para>
/// </summary>
public sealed class VirtioRng : IVirtioDevice, IDisposable
{
    public const ushort DefaultQueueSize = 256;

    /// <summary>Most bytes served for one request, whatever the chain's length (Linux's driver asks for small buffers).</summary>
    public const int MaxBytesPerRequest = 64 * 1024;

    private const byte StateFormatV1 = 1, StateFormat = 2;

    private readonly IEntropyRateLimiter _limiter;
    private readonly RateLimiter _rateLimiter;
    private Action? _kick;
    private readonly ILogger _logger;
    private int _badLogged;
    private long _requests, _bytes, _malformed, _deferred;

    /// <param name="hook">A rate-limit hook asked after <paramref name="rateLimiter"/>; null = none.</param>
    /// <param name="rateLimiter">The device's token buckets (owned); null = unlimited, changeable through <see cref="RateLimiter"/>.</param>
    public VirtioRng(IEntropyRateLimiter? hook = null, ILogger? logger = null, ushort queueSize = DefaultQueueSize, RateLimiter? rateLimiter = null)
    {
        _limiter = hook ?? UnlimitedEntropy.Instance;
        _rateLimiter = rateLimiter ?? new RateLimiter();
        _rateLimiter.Wake = () => Volatile.Read(ref _kick)?.Invoke();
        _logger = logger ?? NullLogger.Instance;
        MaxQueueSize = queueSize;
    }

    public VirtioDeviceType DeviceType => VirtioDeviceType.Entropy;
    public string Id => "virtio-rng";
    public int QueueCount => 1;
    public ushort MaxQueueSize { get; }
    public ulong DeviceFeatures => 0;

    /// <summary>The token-bucket limiter (<see cref="RateLimiter.Update"/> on a running VM).</summary>
    public RateLimiter RateLimiter => _rateLimiter;

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
        if (_kick is null) Volatile.Write(ref _kick, queue.Kick);
        while (queue.TryNext(out var chain))
        {
            if (chain.FirstWritable != 0 || chain.WritableLength == 0)
            {
                Malformed(chain.FirstWritable != 0 ? "device-readable buffers in an entropy request" : "no device-writable buffer");
                queue.Complete(0);
                continue;
            }
            int length = (int)Math.Min(chain.WritableLength, MaxBytesPerRequest);
            if ((!_rateLimiter.IsUnlimited && !_rateLimiter.TryConsume(length)) || !_limiter.TryAcquire(length, queue.Kick))
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

    /// <summary>Format 2: the format byte and the rate limiter with what is left in it (the queue is the transport's). Format 1 (the byte alone) still restores.</summary>
    public byte[] SaveState()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(StateFormat);
            RateLimiterStateCodec.Write(w, _rateLimiter.Save());
        }
        return ms.ToArray();
    }

    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length == 1 && state[0] == StateFormatV1) return;
        if (state.Length < 1 || state[0] != StateFormat)
            throw new InvalidDataException($"{Id}: expected state format {StateFormat}, got {state.Length} bytes");
        try
        {
            using var r = new BinaryReader(new MemoryStream(state[1..].ToArray()));
            var limiter = RateLimiterStateCodec.Read(r);
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException($"{Id}: trailing bytes in state");
            _rateLimiter.Restore(limiter);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{Id}: state is truncated", e);
        }
    }

    public void Dispose()
    {
        var (requests, bytes, malformed, deferred) = Counters;
        RngLog.Counters(_logger, Id, requests, bytes, malformed, deferred);
        _rateLimiter.Dispose();
    }
}
