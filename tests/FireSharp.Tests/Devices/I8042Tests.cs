using CsCheck;
using FireSharp.Devices.Legacy;

namespace FireSharp.Tests.Devices;

public class I8042Tests
{
    private const ulong Data = 0;    // port 0x60
    private const ulong Command = 4; // port 0x64

    private readonly FakeInterruptLine _irq = new();
    private int _resets;

    private I8042 NewController() => new(() => Interlocked.Increment(ref _resets), _irq);

    private static byte In(I8042 kbc, ulong offset)
    {
        Span<byte> b = stackalloc byte[1];
        kbc.Read(offset, b);
        return b[0];
    }

    private static void Out(I8042 kbc, ulong offset, byte value) => kbc.Write(offset, [value]);

    [Fact]
    public void StatusAtPowerOnHasNoDataAndAnUnlockedKeyboard()
    {
        var kbc = NewController();
        byte status = In(kbc, Command);
        Assert.Equal(0x14, status); // system flag + not locked
        Assert.NotEqual(0xFF, status); // Linux treats 0xFF as "no controller"
    }

    [Fact]
    public void CommandFeRequestsReset()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xFF); // pulses no line
        Assert.Equal(0, _resets);
        Out(kbc, Command, 0xFE);
        Assert.Equal(1, _resets);
        Out(kbc, Data, 0xFE); // to the keyboard, not a reset
        Assert.Equal(1, _resets);
    }

    [Fact]
    public void CommandByteCanBeReadAndWritten()
    {
        var kbc = NewController();
        Out(kbc, Command, 0x20);
        Assert.Equal(0x1D, In(kbc, Command)); // output full, command written last
        Assert.Equal(I8042.DefaultControl, In(kbc, Data));
        Assert.Equal(0, In(kbc, Command) & 0x01);

        Out(kbc, Command, 0x60);
        Out(kbc, Data, 0x41); // keyboard interrupt, translation, system flag clear
        Assert.Equal(0x10, In(kbc, Command)); // flag follows command byte bit 2; data written last

        Out(kbc, Command, 0x20);
        Assert.Equal(0x41, In(kbc, Data));
        Assert.Equal(0x41, kbc.GetState().Control);
        Assert.Equal(0, _irq.Pulses); // controller replies raise no interrupt
    }

    [Fact]
    public void LinuxInitSequenceSeesAStableCommandByte()
    {
        var kbc = NewController();
        kbc.EnqueueKeyboard([0x1C]); // stray key press to flush

        // i8042_flush: read data while the output buffer is full.
        int flushed = 0;
        while ((In(kbc, Command) & 0x01) != 0 && flushed < 32)
        {
            In(kbc, Data);
            flushed++;
        }

        Assert.Equal(1, flushed);

        // i8042_controller_init: two equal CTR reads, then write it back changed.
        Out(kbc, Command, 0x20);
        Assert.Equal(0x01, In(kbc, Command) & 0x01);
        byte first = In(kbc, Data);
        Out(kbc, Command, 0x20);
        byte second = In(kbc, Data);
        Assert.Equal(first, second);
        Assert.Equal(0, first & 0x40); // no translation: Linux goes direct, scancode set 2

        byte ctr = (byte)((first | 0x10) & ~0x01);
        Out(kbc, Command, 0x60);
        Assert.Equal(0, In(kbc, Command) & 0x02); // never busy
        Out(kbc, Data, ctr);
        Out(kbc, Command, 0x20);
        Assert.Equal(ctr, In(kbc, Data));
    }

    [Fact]
    public void SelfTestsAnswer()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xAA);
        Assert.Equal(0x55, In(kbc, Data));
        Out(kbc, Command, 0xAB);
        Assert.Equal(0x00, In(kbc, Data));
        Out(kbc, Command, 0xA9);
        Assert.Equal(0x00, In(kbc, Data));
    }

    [Fact]
    public void EnableAndDisableCommandsEditTheCommandByte()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xAD);
        Out(kbc, Command, 0xA8);
        Assert.Equal(0x15, kbc.GetState().Control); // keyboard disabled, aux enabled
        Out(kbc, Command, 0xAE);
        Out(kbc, Command, 0xA7);
        Assert.Equal(I8042.DefaultControl, kbc.GetState().Control);
    }

    [Fact]
    public void OutputPortCanBeReadAndWritten()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xD0);
        Assert.Equal(I8042.DefaultOutputPort, In(kbc, Data));
        Out(kbc, Command, 0xD1);
        Out(kbc, Data, 0xDD);
        Out(kbc, Command, 0xD0);
        Assert.Equal(0xDD, In(kbc, Data));
        Out(kbc, Command, 0xDF); // A20 on
        Out(kbc, Command, 0xD0);
        Assert.Equal(0xDF, In(kbc, Data));
        Assert.Equal(0, _resets);
    }

    [Fact]
    public void KeyboardCommandsAreAcknowledgedWithAnInterrupt()
    {
        var kbc = NewController();
        Out(kbc, Data, 0xF4); // enable scanning
        Assert.Equal(1, _irq.Pulses);
        Assert.Equal(0xFA, In(kbc, Data));

        Out(kbc, Data, 0xF2); // identify
        Assert.Equal(2, _irq.Pulses);
        Assert.Equal(0xFA, In(kbc, Data));
        Assert.Equal(3, _irq.Pulses); // next byte, next edge
        Assert.Equal(0xAB, In(kbc, Data));
        Assert.Equal(0x83, In(kbc, Data));
        Assert.Equal(4, _irq.Pulses);
        Assert.Equal(0, In(kbc, Command) & 0x01);

        Out(kbc, Data, 0xF0); // scan code set, parameter 0 = query
        Assert.Equal(0xFA, In(kbc, Data));
        Out(kbc, Data, 0x00);
        Assert.Equal(0xFA, In(kbc, Data));
        Assert.Equal(0x02, In(kbc, Data));

        Out(kbc, Data, 0xEE);
        Assert.Equal(0xEE, In(kbc, Data));
        Out(kbc, Data, 0xFF);
        Assert.Equal(0xFA, In(kbc, Data));
        Assert.Equal(0xAA, In(kbc, Data));
    }

    [Fact]
    public void DisabledKeyboardInterruptHoldsThePulseUntilEnabled()
    {
        var kbc = NewController();
        Out(kbc, Command, 0x60);
        Out(kbc, Data, 0x24); // keyboard interrupt off
        Assert.True(kbc.EnqueueKeyboard([0x1C]));
        Assert.Equal(0, _irq.Pulses);
        Assert.Equal(0x01, In(kbc, Command) & 0x01);

        Out(kbc, Command, 0x60);
        Out(kbc, Data, 0x25); // on: the waiting byte now interrupts
        Assert.Equal(1, _irq.Pulses);
        Assert.Equal(0x1C, In(kbc, Data));
    }

    [Fact]
    public void CtrlAltDelIsTypedInScanCodeSet2WithOneEdgePerByte()
    {
        var kbc = NewController();
        Assert.True(kbc.SendCtrlAltDel());
        Assert.Equal(1, _irq.Pulses);

        var got = new List<byte>();
        while ((In(kbc, Command) & 0x01) != 0)
        {
            got.Add(In(kbc, Data));
        }

        Assert.Equal([0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14], got);
        Assert.Equal(got.Count, _irq.Pulses);
        Assert.Equal(0, _resets); // the guest decides what Ctrl+Alt+Del means
    }

    [Fact]
    public void KeyboardQueueIsBoundedAllOrNothing()
    {
        var kbc = NewController();
        Assert.True(kbc.EnqueueKeyboard(new byte[I8042.OutputBufferCapacity - 1]));
        Assert.False(kbc.EnqueueKeyboard([1, 2]));
        Assert.Equal(I8042.OutputBufferCapacity - 1, kbc.GetState().Output.Length);
        Assert.False(kbc.SendCtrlAltDel());
    }

    [Fact]
    public void AuxOutputBufferSetsTheAuxStatusBitWithoutKeyboardInterrupt()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xD3);
        Out(kbc, Data, 0x5A);
        Assert.Equal(0x21, In(kbc, Command) & 0x21);
        Assert.Equal(0x5A, In(kbc, Data));
        Assert.Equal(0, _irq.Pulses);

        Out(kbc, Command, 0xD2);
        Out(kbc, Data, 0x1C);
        Assert.Equal(0x01, In(kbc, Command) & 0x21);
        Assert.Equal(1, _irq.Pulses);
    }

    [Fact]
    public void EmptyDataPortRepeatsTheLastByteAndOtherOffsetsReadAllOnes()
    {
        var kbc = NewController();
        Out(kbc, Command, 0xAA);
        Assert.Equal(0x55, In(kbc, Data));
        Assert.Equal(0x55, In(kbc, Data));
        for (ulong offset = 1; offset <= 3; offset++)
        {
            Assert.Equal(0xFF, In(kbc, offset));
            Out(kbc, offset, 0xFE);
        }

        Assert.Equal(0, _resets);
    }

    [Fact]
    public void StateRoundTripsThroughGetAndSet()
    {
        var kbc = NewController();
        Out(kbc, Command, 0x60);
        Out(kbc, Data, 0x07);
        Out(kbc, Data, 0xED);  // keyboard waits for the LED byte
        In(kbc, Data);
        kbc.EnqueueKeyboard([0x1C, 0xF0, 0x1C]);
        Out(kbc, Command, 0xD1); // controller waits for the output port byte
        var state = kbc.GetState();

        Assert.Equal(0x07, state.Control);
        Assert.Equal(0xD1, state.PendingCommand);
        Assert.Equal(0xED, state.PendingKeyboardCommand);
        Assert.True(state.LastWriteWasCommand);
        Assert.Equal(0xFA, state.LastOutput);
        Assert.Equal(
            [new(0x1C, I8042Source.Keyboard), new(0xF0, I8042Source.Keyboard), new(0x1C, I8042Source.Keyboard)],
            state.Output);

        var irq = new FakeInterruptLine();
        var copy = new I8042(() => { }, irq);
        copy.SetState(state);
        Assert.Equal(state, copy.GetState());
        Assert.Equal(1, irq.Pulses); // a keyboard byte is waiting: make sure the guest hears of it
        Assert.Equal(0x1C, In(copy, Data));
        Out(copy, Data, 0xCF);
        Out(copy, Command, 0xD0);
        Assert.Equal(0xCF, In(copy, Data));
    }

    [Fact]
    public void SetStateRejectsAnOverfullBuffer()
    {
        var kbc = NewController();
        var state = new I8042State { Output = new I8042OutputByte[I8042.OutputBufferCapacity + 1] };
        Assert.Throws<ArgumentException>(() => kbc.SetState(state));
    }

    [Fact]
    public void RandomPortTrafficNeverThrowsAndKeepsTheBufferBounded()
    {
        var op = Gen.Select(Gen.Int[0, 5], Gen.Byte, Gen.Bool);
        op.Array[0, 100].Sample(ops =>
        {
            int resets = 0;
            var kbc = new I8042(() => resets++, new FakeInterruptLine());
            int expectedResets = 0;
            foreach (var (offset, value, isWrite) in ops)
            {
                if (isWrite)
                {
                    kbc.Write((ulong)offset, [value]);
                    if (offset == 4 && value >= 0xF0 && (value & 1) == 0)
                    {
                        expectedResets++;
                    }
                }
                else
                {
                    kbc.Read((ulong)offset, new byte[1]);
                }

                var state = kbc.GetState();
                Assert.True(state.Output.Length <= I8042.OutputBufferCapacity);
                var status = new byte[1];
                kbc.Read(4, status);
                Assert.Equal(state.Output.Length > 0, (status[0] & 0x01) != 0);
                Assert.Equal(0, status[0] & 0x02);
            }

            Assert.Equal(expectedResets, resets);
        }, iter: 1000);
    }
}
