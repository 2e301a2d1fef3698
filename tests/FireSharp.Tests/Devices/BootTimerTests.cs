using FireSharp.Devices;

namespace FireSharp.Tests.Devices;

/// <summary>The boot timer's signal is an event (<see cref="BootTimer.Done"/>), so nobody has to poll for it.</summary>
public sealed class BootTimerTests
{
    [Fact]
    public async Task Done_completes_at_the_first_magic_write_only()
    {
        var timer = new BootTimer(System.Diagnostics.Stopwatch.GetTimestamp());
        timer.Write(0, [BootTimer.MagicValue - 1]);
        timer.Write(8, [BootTimer.MagicValue]);
        Assert.False(timer.Done.IsCompleted);
        timer.Write(0, [BootTimer.MagicValue]);
        var done = await timer.Done.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(timer.BootDone, done);
        timer.Write(0, [BootTimer.MagicValue]); // a second signal changes nothing
        Assert.Equal(done, timer.BootDone);
    }

    [Fact]
    public async Task Done_completes_when_restored_state_says_boot_was_done()
    {
        var pending = new BootTimer(0);
        pending.RestoreState(new BootTimer(0).SaveState());
        Assert.False(pending.Done.IsCompleted);

        var booted = new BootTimer(0);
        booted.State = TimeSpan.FromMilliseconds(42).Ticks;
        var restored = new BootTimer(0);
        restored.RestoreState(booted.SaveState());
        Assert.Equal(TimeSpan.FromMilliseconds(42), await restored.Done.WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
