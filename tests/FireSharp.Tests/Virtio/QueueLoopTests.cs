using FireSharp.Devices.Virtio;

namespace FireSharp.Tests.Virtio;

/// <summary>
/// A queue-only event loop (how the device manager runs virtio-blk and virtio-rng) and its eventfds, without KVM:
/// the MMIO notify wakes the loop's thread, which does the I/O.
/// </summary>
public class QueueLoopTests
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
        using var loop = rig.QueueLoop();
        int? ioThread = null;
        rig.Backend.OnFlush = () => ioThread = Environment.CurrentManagedThreadId;
        loop.Start();

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
        using var loop = rig.QueueLoop(notifyThroughTheLoop: false);
        loop.Start();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 1024);
        loop.QueueEvent(0).Signal(); // what KVM_IOEVENTFD does on the guest's QueueNotify write
        WaitFor(() => rig.Driver.UsedIdx == 1, "a used buffer");
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
    }

    /// <summary>
    /// The transport's lock is not held while the device does I/O: a vCPU's register accesses (here: queue
    /// registers, which take it, and a reset) go through while a request is stuck in the backend, and the request,
    /// finishing after the reset, is not returned into the reset rings.
    /// </summary>
    [Fact]
    public async Task A_register_access_never_waits_for_block_io_and_a_reset_drops_the_request_in_flight()
    {
        using var rig = new BlockRig();
        using var loop = rig.QueueLoop();
        var (entered, release) = rig.HoldFlushes();
        loop.Start();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Notify();
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the flush did not start");

        var access = Task.Run(() =>
        {
            Mmio.W32(rig.Transport, VirtioMmioRegister.QueueSel, 0);
            uint max = Mmio.R32(rig.Transport, VirtioMmioRegister.QueueNumMax);
            uint ready = Mmio.R32(rig.Transport, VirtioMmioRegister.QueueReady);
            Mmio.W32(rig.Transport, VirtioMmioRegister.Status, 0); // the driver resets the device
            return (max, ready, Mmio.R32(rig.Transport, VirtioMmioRegister.Status));
        });
        // A hang guard, not a timing assertion: the accesses need no lock the I/O holds.
        bool done = await Task.WhenAny(access, Task.Delay(TimeSpan.FromSeconds(30))) == access;
        release.Set();
        Assert.True(done, "a register access waited for the device's I/O");
        Assert.Equal((256u, 1u, 0u), await access);

        rig.Transport.Quiesce(); // returns once the run that held the flush has ended
        Assert.Equal(1, rig.Backend.Flushes);
        Assert.Equal(0, rig.Driver.UsedIdx); // completed into the old rings: dropped
        Assert.Equal(0, rig.Irq.Pulses);
    }

    [Fact]
    public void DisposeStopsTheThreadAndLateNotifiesAreHarmless()
    {
        using var rig = new BlockRig();
        var loop = rig.QueueLoop();
        loop.Start();
        loop.Dispose();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify(); // must not throw
        Assert.Equal(0, rig.Driver.UsedIdx);
        loop.Dispose();
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

    /// <summary>
    /// A loop that dies outside queue processing (here: its turn throws, as a broken epoll or tap would) must not
    /// leave the device silently dead: the transport enters DEVICE_NEEDS_RESET and raises a configuration
    /// interrupt, so the guest's driver learns it; the failure is reported once.
    /// </summary>
    [Fact]
    public void An_event_loop_that_dies_outside_queue_processing_sets_DEVICE_NEEDS_RESET()
    {
        using var rig = new BlockRig();
        var failures = new List<Exception>();
        using var loop = new VirtioEventLoop("test", 1, 2, _ => throw new IOException("epoll_wait: EBADF"), e => { lock (failures) failures.Add(e); });
        loop.Attach(rig.Block, rig.Transport);
        Assert.False(rig.Transport.NeedsReset);
        loop.Start();

        WaitFor(() => rig.Transport.NeedsReset, "DEVICE_NEEDS_RESET");
        uint status = Mmio.R32(rig.Transport, VirtioMmioRegister.Status);
        Assert.NotEqual(0u, status & VirtioStatus.DeviceNeedsReset);
        Assert.NotEqual(0u, status & VirtioStatus.DriverOk);
        Assert.NotEqual(0u, Mmio.R32(rig.Transport, VirtioMmioRegister.InterruptStatus) & VirtioInterrupt.ConfigChange);
        Assert.Equal(1, rig.Transport.NeedsResetCount);
        lock (failures) Assert.IsType<IOException>(Assert.Single(failures));
        Assert.Contains(rig.Logger.Entries, e => e.Message.Contains("event loop failed", StringComparison.Ordinal));
    }
}
