using FireSharp.Memory;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// A device's handle on one of its queues while the transport lets it run. The device loops
/// <c>while (ctx.TryNext(out var chain)) ctx.Complete(Handle(chain));</c>.
/// <para>
/// The transport's lock is held only inside <see cref="TryNext"/> and <see cref="Complete"/> (the ring
/// accesses), never while the device works on a chain: a vCPU's register access never waits for a device's
/// I/O. A driver reset while a chain is out is therefore possible; the chain then belongs to the queue as it
/// was, and its <see cref="Complete"/> is dropped (nothing is written to the new rings, no interrupt).
/// </para>
/// </summary>
public sealed class VirtqueueContext
{
    private readonly VirtioMmioTransport _transport;
    private ushort _head;
    private int _layoutEpoch;
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
        lock (_transport.Gate)
        {
            while (_transport.CanProcess(Queue))
            {
                switch (Queue.TryPop(Memory, out chain))
                {
                    case PopResult.Chain:
                        _head = chain.Head;
                        _layoutEpoch = _transport.LayoutEpoch;
                        _holding = true;
                        return true;
                    case PopResult.Broken:
                        _transport.OnQueueBroken(this);
                        return false;
                    default:
                        if (Queue.EnableNotificationAndCheck(Memory)) continue;
                        if (Queue.IsBroken) _transport.OnQueueBroken(this);
                        return false;
                }
            }
            return false;
        }
    }

    /// <summary>
    /// Returns the chain from the last <see cref="TryNext"/> to the driver, saying how many bytes the device
    /// wrote into its writable part. Everything the device wrote must be in guest memory before this call.
    /// Dropped when the driver reset the device since <see cref="TryNext"/>.
    /// </summary>
    public void Complete(uint writtenLength)
    {
        if (!_holding) throw new InvalidOperationException("Complete without a chain from TryNext");
        _holding = false;
        lock (_transport.Gate)
        {
            if (!StillCurrent()) return;
            Queue.AddUsed(Memory, _head, writtenLength);
            if (Queue.IsBroken) _transport.OnQueueBroken(this);
        }
    }

    /// <summary>
    /// Gives the chain from the last <see cref="TryNext"/> back to the queue untouched (the device cannot serve
    /// it now, e.g. a rate limit): the next <see cref="TryNext"/> returns it again. Call <see cref="Kick"/> (or
    /// wait for the driver's next notification) to have the queue run again.
    /// </summary>
    public void Defer()
    {
        if (!_holding) throw new InvalidOperationException("Defer without a chain from TryNext");
        _holding = false;
        lock (_transport.Gate)
        {
            if (StillCurrent()) Queue.UndoPop();
        }
    }

    /// <summary>Asks for this queue to be run again, on the device's own thread (thread-safe; for a deferred chain).</summary>
    public void Kick() => _transport.RequestRun(Index);

    /// <summary>Forgets the chain if a device failed between TryNext and Complete.</summary>
    internal void Abandon() => _holding = false;

    private bool StillCurrent() => _layoutEpoch == _transport.LayoutEpoch && Queue.Ready;
}
