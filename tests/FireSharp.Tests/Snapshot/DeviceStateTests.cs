using CsCheck;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Tests.Devices;

namespace FireSharp.Tests.Snapshot;

/// <summary>IStatefulDevice round trips for the legacy devices, and refusal of malformed state.</summary>
public class DeviceStateTests
{
    private static readonly Gen<Serial16550State> GenSerial =
        Gen.Select(Gen.Byte.Array[9], Gen.Bool, Gen.Byte.Array[0, 64]).Select((r, thre, input) => new Serial16550State
        {
            Ier = (byte)(r[0] & 0x0f), Lcr = r[1], Mcr = (byte)(r[2] & 0x1f), Fcr = (byte)(r[3] & 0xc9), Lsr = (byte)(r[4] & 0x1e),
            Msr = r[5], Scr = r[6], Dll = r[7], Dlm = r[8], ThrEmptyInterruptPending = thre, PendingInput = input,
        });

    private static readonly Gen<I8042State> GenI8042 =
        Gen.Select(Gen.Byte.Array[5], Gen.Bool, Gen.Select(Gen.Byte, Gen.Int[0, 2]).Array[0, I8042.OutputBufferCapacity])
            .Select((r, cmd, output) => new I8042State
            {
                Control = r[0], OutputPort = r[1], PendingCommand = r[2], PendingKeyboardCommand = r[3], LastOutput = r[4],
                LastWriteWasCommand = cmd,
                Output = [.. output.Select(o => new I8042OutputByte(o.Item1, (I8042Source)o.Item2))],
            });

    [Fact]
    public void SerialStateSurvivesSaveAndRestore()
    {
        GenSerial.Sample(state =>
        {
            var a = new Serial16550(NullSerialSink.Instance, new FakeInterruptLine());
            a.SetState(state);
            var b = new Serial16550(NullSerialSink.Instance, new FakeInterruptLine());
            ((IStatefulDevice)b).RestoreState(((IStatefulDevice)a).SaveState());
            Assert.Equal(a.GetState(), b.GetState());
            Assert.Equal("com1", ((IStatefulDevice)a).StateId);
        });
    }

    [Fact]
    public void I8042StateSurvivesSaveAndRestore()
    {
        GenI8042.Sample(state =>
        {
            var a = new I8042(() => { });
            a.SetState(state);
            var b = new I8042(() => { });
            ((IStatefulDevice)b).RestoreState(((IStatefulDevice)a).SaveState());
            Assert.Equal(a.GetState(), b.GetState());
        });
    }

    [Fact]
    public void BootTimerStateSurvivesSaveAndRestore()
    {
        var a = new BootTimer(0);
        a.Write(0, [BootTimer.MagicValue]);
        Assert.NotNull(a.BootDone);
        var b = new BootTimer(0);
        Assert.Null(b.BootDone);
        ((IStatefulDevice)b).RestoreState(((IStatefulDevice)a).SaveState());
        Assert.Equal(a.BootDone, b.BootDone);
        Assert.Equal("boot-timer", ((IStatefulDevice)b).StateId);
    }

    [Fact]
    public void MalformedStateIsRefusedAndLeavesTheDeviceAsItWas()
    {
        var serial = new Serial16550(NullSerialSink.Instance, new FakeInterruptLine());
        serial.SetState(new Serial16550State { Scr = 0x5a, Lcr = 3, PendingInput = [1, 2, 3] });
        var before = serial.GetState();
        var good = ((IStatefulDevice)serial).SaveState();
        var keyboard = new I8042(() => { });
        var kbGood = ((IStatefulDevice)keyboard).SaveState();
        var timer = new BootTimer(0);

        // Every truncation, a wrong version, trailing bytes, and an impossible length.
        for (int n = 0; n < good.Length; n++)
            Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)serial).RestoreState(good.AsSpan(0, n)));
        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)serial).RestoreState([2, .. good[1..]]));
        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)serial).RestoreState([.. good, 0]));
        var tooMuchInput = new Serial16550State { PendingInput = new byte[Serial16550.DefaultInputCapacity + 1] }.Encode();
        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)serial).RestoreState(tooMuchInput));
        Assert.Equal(before, serial.GetState());

        for (int n = 0; n < kbGood.Length; n++)
            Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)keyboard).RestoreState(kbGood.AsSpan(0, n)));
        var badSource = new I8042State { Output = [new I8042OutputByte(1, (I8042Source)7)] }.Encode();
        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)keyboard).RestoreState(badSource));

        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)timer).RestoreState([1, 0, 0]));
        Assert.Throws<InvalidDataException>(() => ((IStatefulDevice)timer).RestoreState([]));
        Assert.Null(timer.BootDone);
    }
}
