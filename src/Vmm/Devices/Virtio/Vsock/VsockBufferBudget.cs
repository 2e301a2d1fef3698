namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>What a connection may hold: its receive window (the buf_alloc it advertises, which the guest may fill) and its staging buffer.</summary>
internal readonly record struct VsockReservation(int Window, int Staging)
{
    public int Bytes => Window + Staging;
}

/// <summary>
/// The host memory one VM's vsock connections may hold for it. Every connection reserves its receive window and
/// staging buffer before it exists and gives them back when it ends, so a guest that opens every connection it may
/// and fills every window makes the worker hold at most <see cref="Limit"/> bytes (not connections × 272 KiB).
/// <para>
/// The smallest reservation (<see cref="MinReservation"/>) is kept back for every connection that may still be
/// opened, so the connection limit, not the budget, is what refuses; while few connections are open each gets the
/// full <see cref="VsockConnection.BufferSize"/> window, and as the budget fills new ones get smaller windows
/// (slower, never refused). Event-loop thread only.
/// </para>
/// </summary>
internal sealed class VsockBufferBudget
{
    /// <summary>The smallest window and staging buffer a connection is given.</summary>
    public const int MinWindow = 4096, MinStaging = 4096;

    public const int MinReservation = MinWindow + MinStaging;

    private static readonly VsockReservation Full = new(VsockConnection.BufferSize, VsockConnection.StagingSize);

    /// <summary>A budget of <paramref name="limit"/> bytes for at most <paramref name="maxConnections"/> connections.</summary>
    public VsockBufferBudget(long limit, int maxConnections)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxConnections, 1);
        if (limit < (long)maxConnections * MinReservation)
            throw new ArgumentOutOfRangeException(nameof(limit), limit,
                $"a vsock buffer budget for {maxConnections} connections is at least {(long)maxConnections * MinReservation} bytes ({MinReservation} each)");
        Limit = limit;
        MaxConnections = maxConnections;
    }

    /// <summary>At most this many bytes are reserved at once.</summary>
    public long Limit { get; }

    public int MaxConnections { get; }

    /// <summary>Bytes reserved by the connections that exist now.</summary>
    public long Reserved { get; private set; }

    /// <summary>Connections holding a reservation.</summary>
    public int Count { get; private set; }

    /// <summary>
    /// Reserves a new connection's buffers: as much of <see cref="VsockConnection.BufferSize"/> +
    /// <see cref="VsockConnection.StagingSize"/> as fits while <see cref="MinReservation"/> stays free for every other
    /// connection that may still be opened; null when <see cref="MaxConnections"/> hold one already.
    /// </summary>
    public VsockReservation? TryReserve()
    {
        if (Count >= MaxConnections) return null;
        long keptBack = (long)(MaxConnections - Count - 1) * MinReservation;
        long grant = Math.Min(Full.Bytes, Limit - Reserved - keptBack);
        if (grant < MinReservation) return null; // cannot happen while the invariant holds; refuse rather than overcommit
        int staging = (int)Math.Min(VsockConnection.StagingSize, grant / 2);
        var r = new VsockReservation((int)grant - staging, staging);
        Reserved += r.Bytes;
        Count++;
        return r;
    }

    /// <summary>Gives back what <see cref="TryReserve"/> returned for a connection that is gone.</summary>
    public void Release(VsockReservation r)
    {
        if (Count == 0 || Reserved < r.Bytes) throw new InvalidOperationException("vsock buffer budget released more than was reserved");
        Reserved -= r.Bytes;
        Count--;
    }
}
