using FireSharp.Memory;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// A device's handle on one of its queues while the transport lets it run. The device loops
/// <c>while (ctx.TryNext(out var chain)) ctx.Complete(Handle(chain));</c>. Between a successful
/// <see cref="TryNext"/> and its <see cref="Complete"/> the transport's lock is held, so a driver reset waits
/// for the request in flight and never races it; between requests it is free.
/// </summary>
public sealed class VirtqueueContext
{
    private readonly VirtioMmioTransport _transport;
    private ushort _head;
    private bool _holding;

    internal VirtqueueContext(VirtioMmioTransport transport, int index, Virtqueue queue)
    {
        _transport = transport;
        Index = index;
        Queue = queue;
    }

    public int Index { get; }
    public Virtqueue Queue { get; }
    public GuestMemory Memory => _transport.Memory;

    /// <summary>Pops the next valid chain; false when the queue is empty, broken, not ready or the device is stopped.</summary>
    public bool TryNext(out DescriptorChain chain)
    {
        chain = default;
        if (_holding) throw new InvalidOperationException("TryNext called twice without Complete");
        Monitor.Enter(_transport.Gate);
        _holding = true;
        while (_transport.CanProcess(Queue))
        {
            switch (Queue.TryPop(Memory, out chain))
            {
                case PopResult.Chain:
                    _head = chain.Head;
                    return true;
                case PopResult.Broken:
                    _transport.OnQueueBroken(this);
                    Release();
                    return false;
                default:
                    if (Queue.EnableNotificationAndCheck(Memory)) continue;
                    if (Queue.IsBroken) _transport.OnQueueBroken(this);
                    Release();
                    return false;
            }
        }
        Release();
        return false;
    }

    /// <summary>
    /// Returns the chain from the last <see cref="TryNext"/> to the driver, saying how many bytes the device
    /// wrote into its writable part. Everything the device wrote must be in guest memory before this call.
    /// </summary>
    public void Complete(uint writtenLength)
    {
        if (!_holding) throw new InvalidOperationException("Complete without a chain from TryNext");
        try
        {
            Queue.AddUsed(Memory, _head, writtenLength);
            if (Queue.IsBroken) _transport.OnQueueBroken(this);
        }
        finally
        {
            Release();
        }
    }

    /// <summary>Releases the lock if a device failed between TryNext and Complete.</summary>
    internal void Abandon()
    {
        if (_holding) Release();
    }

    private void Release()
    {
        _holding = false;
        Monitor.Exit(_transport.Gate);
    }
}
