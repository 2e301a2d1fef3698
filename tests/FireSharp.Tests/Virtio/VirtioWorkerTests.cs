using FireSharp.Devices.Virtio;

namespace FireSharp.Tests.Virtio;

/// <summary>The worker thread and eventfds, without KVM: the MMIO notify wakes the worker, which does the I/O.</summary>
public class VirtioWorkerTests
{
    private static void WaitFor(Func<bool> condition, string what)
    {
        // A hang guard, not a timing assertion: the work normally takes microseconds.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out waiting for {what}");
            Thread.Sleep(1);
        }
    }

    [Fact]
    public void NotifyWakesTheWorkerWhichCompletesRequestsOffTheCallingThread()
    {
        using var rig = new BlockRig();
        using var worker = new VirtioWorker(rig.Transport, rig.Logger);
        rig.Transport.QueueNotifyHandler = worker.Notify;
        int? ioThread = null;
        rig.Backend.OnFlush = () => ioThread = Environment.CurrentManagedThreadId;
        worker.Start();

        var read = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 7, 512);
        var flush = rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Notify();
        WaitFor(() => rig.Driver.UsedIdx == 2, "two used buffers");

        Assert.Equal(VirtioBlock.StatusOk, read.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusOk, flush.Status(rig.Memory));
        Assert.NotNull(ioThread);
        Assert.NotEqual(Environment.CurrentManagedThreadId, ioThread);
        WaitFor(() => rig.Irq.Pulses >= 1, "the interrupt");
    }

    [Fact]
    public void AnEventFdSignalledDirectlyAsKvmWouldAlsoWakesTheWorker()
    {
        using var rig = new BlockRig();
        using var worker = new VirtioWorker(rig.Transport, rig.Logger);
        worker.Start();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 1024);
        worker.QueueEvent(0).Signal(); // what KVM_IOEVENTFD does on the guest's QueueNotify write
        WaitFor(() => rig.Driver.UsedIdx == 1, "a used buffer");
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
    }

    [Fact]
    public void DisposeStopsTheThreadAndLateNotifiesAreHarmless()
    {
        using var rig = new BlockRig();
        var worker = new VirtioWorker(rig.Transport, rig.Logger);
        rig.Transport.QueueNotifyHandler = worker.Notify;
        worker.Start();
        worker.Dispose();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify(); // must not throw
        Assert.Equal(0, rig.Driver.UsedIdx);
        worker.Dispose();
    }

    [Fact]
    public void EventFdCountsAndDrains()
    {
        using var e = EventFd.Create();
        Assert.Equal(0UL, e.Drain());
        e.Signal();
        e.Signal();
        Assert.Equal(2UL, e.Drain());
        Assert.Equal(0UL, e.Drain());
        var line = new EventFdInterruptLine(e);
        line.Pulse();
        line.SetLevel(false);
        line.SetLevel(true);
        Assert.Equal(2UL, e.Drain());
    }
}
