using System.Globalization;

namespace FireSharp.Devices.RateLimiting;

/// <summary>
/// One token bucket, as Firecracker's API has it: <see cref="Size"/> tokens (bytes or operations), refilled from
/// empty to full over <see cref="RefillTimeMs"/> (continuously: size/refill_time per ms), and
/// <see cref="OneTimeBurst"/> extra tokens spent first and never refilled. The bucket starts full.
/// </summary>
public sealed record TokenBucketSpec(long Size, long OneTimeBurst, long RefillTimeMs)
{
    /// <summary>The longest refill time accepted: a day (keeps every timestamp product far from overflow).</summary>
    public const long MaxRefillTimeMs = 24L * 3600 * 1000;

    /// <summary>Checks the bucket; <see cref="RateLimiterConfigException"/> naming <paramref name="field"/> otherwise.</summary>
    public void Validate(string field)
    {
        if (Size <= 0)
            throw new RateLimiterConfigException(field + ".size", RateLimiterConfigError.InvalidSize,
                $"a token bucket's size must be at least 1 (got {Size}); leave the bucket out for no limit");
        if (OneTimeBurst < 0)
            throw new RateLimiterConfigException(field + ".one_time_burst", RateLimiterConfigError.InvalidBurst,
                $"a one-time burst must not be negative (got {OneTimeBurst})");
        if (RefillTimeMs is <= 0 or > MaxRefillTimeMs)
            throw new RateLimiterConfigException(field + ".refill_time_ms", RateLimiterConfigError.InvalidRefillTime,
                $"a token bucket's refill time must be 1..{MaxRefillTimeMs} ms (got {RefillTimeMs})");
    }

    public override string ToString() =>
        OneTimeBurst > 0
            ? string.Create(CultureInfo.InvariantCulture, $"{Size}/{RefillTimeMs}ms+{OneTimeBurst}")
            : string.Create(CultureInfo.InvariantCulture, $"{Size}/{RefillTimeMs}ms");
}

/// <summary>
/// A device's limiter, as Firecracker's: an optional bandwidth bucket (bytes) and an optional operations bucket
/// (requests). Neither = no limit.
/// </summary>
public sealed record RateLimiterSpec(TokenBucketSpec? Bandwidth, TokenBucketSpec? Ops)
{
    public bool IsUnlimited => Bandwidth is null && Ops is null;

    /// <summary>Checks both buckets; <paramref name="field"/> names the limiter ("drive[0].rate_limiter").</summary>
    public void Validate(string field)
    {
        Bandwidth?.Validate(field + ".bandwidth");
        Ops?.Validate(field + ".ops");
    }

    /// <summary>
    /// The command line's limiter: <paramref name="bytesPerSecond"/> and/or <paramref name="opsPerSecond"/> (null =
    /// that bucket absent; both null = null). Each rate N becomes a bucket holding about a tenth of a second of
    /// it (100 ms to 1 s, so that the rate is exact; 64M: 8 MiB per 125 ms), no one-time burst.
    /// </summary>
    public static RateLimiterSpec? PerSecond(long? bytesPerSecond, long? opsPerSecond) =>
        bytesPerSecond is null && opsPerSecond is null ? null
            : new RateLimiterSpec(bytesPerSecond is { } b ? Rate(b) : null, opsPerSecond is { } o ? Rate(o) : null);

    /// <summary>
    /// N per second exactly, in a bucket that holds about a tenth of a second: the refill time is the smallest
    /// multiple of 1000/gcd(N, 1000) ms that is at least 100 ms (at most 1 s), and the size N times that.
    /// </summary>
    private static TokenBucketSpec Rate(long perSecond)
    {
        long step = 1000 / (long)System.Numerics.BigInteger.GreatestCommonDivisor(perSecond, 1000);
        long refillMs = step >= 100 ? step : (100 + step - 1) / step * step;
        return new TokenBucketSpec((long)((Int128)perSecond * refillMs / 1000), 0, refillMs);
    }

    /// <summary>
    /// A command-line amount: a positive integer with an optional K, M or G suffix (binary: 1K = 1024), e.g. "64M".
    /// <see cref="RateLimiterConfigException"/> (InvalidSyntax, naming <paramref name="field"/>) for anything else.
    /// </summary>
    public static long ParseAmount(string text, string field)
    {
        ArgumentNullException.ThrowIfNull(text);
        int shift = text.Length == 0 ? 0 : char.ToUpperInvariant(text[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 };
        var digits = shift == 0 ? text.AsSpan() : text.AsSpan(0, text.Length - 1);
        if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n <= 0 || n > long.MaxValue >> shift)
            throw new RateLimiterConfigException(field, RateLimiterConfigError.InvalidSyntax,
                $"'{text}' is not a positive amount (an integer with an optional K, M or G suffix, at most 2^63-1)");
        return n << shift;
    }

    public override string ToString() =>
        IsUnlimited ? "unlimited" : $"bandwidth {Bandwidth?.ToString() ?? "-"}, ops {Ops?.ToString() ?? "-"}";
}

/// <summary>Which of a VM's limiters an update is for.</summary>
public enum RateLimiterTarget
{
    /// <summary>A drive, by its id.</summary>
    Drive,

    /// <summary>What a network interface (by its id) receives.</summary>
    NetworkRx,

    /// <summary>What a network interface (by its id) sends.</summary>
    NetworkTx,

    /// <summary>The entropy device.</summary>
    Entropy,
}

/// <summary>One limiter to replace on a running VM: the device path, its new spec (null = no limit), and the field an error names.</summary>
public sealed record RateLimiterChange(RateLimiterTarget Target, string DeviceId, RateLimiterSpec? Spec, string Field);

/// <summary>Why a rate limiter's configuration was refused.</summary>
public enum RateLimiterConfigError
{
    InvalidSize,
    InvalidBurst,
    InvalidRefillTime,
    InvalidSyntax,
    UnknownDevice,
}

/// <summary>A rate limiter the host refuses; <see cref="DeviceConfigException.Field"/> names the bucket field at fault.</summary>
public sealed class RateLimiterConfigException(string field, RateLimiterConfigError reason, string message)
    : DeviceConfigException(field, message)
{
    public RateLimiterConfigError Reason { get; } = reason;

    public override DeviceConfigProblem Problem =>
        Reason == RateLimiterConfigError.UnknownDevice ? DeviceConfigProblem.NotFound : DeviceConfigProblem.Invalid;
}
