using FireSharp.Devices.Virtio;
using FireSharp.Tests.Virtio;

namespace FireSharp.Tests.Snapshot;

/// <summary>Quiescing a virtio device for a snapshot, without KVM: the request in flight finishes, nothing else runs.</summary>
public class DeviceQuiesceTests
{
    private static void WaitFor(Func<bool> condition, string what)
    {
        // A hang guard, not a timing assertion.
        if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(30))) Assert.Fail($"timed out waiting for {what}");
    }

    [Fact]
    public void QuiesceWaitsForTheRequestInFlightAndItsInterruptThenHoldsTheRest()
    {
        using var rig = new BlockRig();
        using var loop = rig.QueueLoop();
        var (entered, release) = rig.HoldFlushes();
        loop.Start();

        var flush = rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        var read = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 1, 512);
        rig.Notify();
        Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the flush did not start");

        var quiesce = new Thread(rig.Transport.Quiesce) { IsBackground = true };
        quiesce.Start();
        WaitFor(() => rig.Transport.IsQuiesced, "the quiesce flag");
        // The flush is still blocked in the backend: Quiesce cannot have returned.
        Assert.True(quiesce.IsAlive);
        Assert.Equal(0, rig.Driver.UsedIdx);
        release.Set();
        Assert.True(quiesce.Join(TimeSpan.FromSeconds(30)), "Quiesce did not return after the request finished");

        // The request in flight completed, with its interrupt; the one behind it was not taken.
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal(VirtioBlock.StatusOk, flush.Status(rig.Memory));
        Assert.Equal(0xEE, read.Status(rig.Memory));
        Assert.True(rig.Irq.Pulses >= 1, "the completed request's interrupt was not raised before Quiesce returned");
        byte[] state = rig.Transport.SaveState();

        // A notification while quiesced is kept, not lost, and nothing runs.
        var second = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 2, 512);
        rig.Notify();
        rig.Transport.ProcessQueue(0); // even a direct call does not run a quiesced queue
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal(state, rig.Transport.SaveState());

        rig.Transport.Unquiesce();
        Assert.False(rig.Transport.IsQuiesced);
        WaitFor(() => rig.Driver.UsedIdx == 3, "the held requests after Unquiesce");
        Assert.Equal(VirtioBlock.StatusOk, read.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusOk, second.Status(rig.Memory));
    }

    [Fact]
    public void RaisePendingInterruptRepeatsOnlyAnUnacknowledgedInterrupt()
    {
        using var rig = new BlockRig();
        rig.Transport.RaisePendingInterrupt();
        Assert.Equal(0, rig.Irq.Pulses); // nothing pending

        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify(); // no worker: processed inline
        Assert.Equal(1, rig.Driver.UsedIdx);
        int pulses = rig.Irq.Pulses;
        Assert.NotEqual(0u, rig.Transport.InterruptStatus);

        // Restored into a fresh transport, the unacknowledged status raises the line again.
        using var copy = new BlockRig(bringup: false);
        copy.Transport.RestoreState(rig.Transport.SaveState());
        copy.Transport.RaisePendingInterrupt();
        Assert.Equal(1, copy.Irq.Pulses);
        Assert.Equal(pulses, rig.Irq.Pulses);
    }
}
