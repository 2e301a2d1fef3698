using System.Text;
using FireSharp.Devices.Legacy;

namespace FireSharp.Tests.Devices;

public class Serial16550Tests
{
    // Offsets.
    private const ulong Rbr = 0, Thr = 0, Dll = 0, Ier = 1, Dlm = 1, Iir = 2, Fcr = 2, Lcr = 3, Mcr = 4, Lsr = 5, Msr = 6, Scr = 7;

    private readonly MemorySerialSink _sink = new();
    private readonly FakeInterruptLine _line = new();

    private Serial16550 NewUart(int inputCapacity = Serial16550.DefaultInputCapacity) =>
        new(_sink, _line, inputCapacity);

    private static byte In(Serial16550 uart, ulong offset)
    {
        Span<byte> b = stackalloc byte[1];
        uart.Read(offset, b);
        return b[0];
    }

    private static void Out(Serial16550 uart, ulong offset, byte value) => uart.Write(offset, [value]);

    [Fact]
    public void DlabSwitchesOffsetsZeroAndOneToTheDivisorLatch()
    {
        var uart = NewUart();
        Out(uart, Ier, 0x05);
        Out(uart, Lcr, 0x83); // DLAB + 8N1
        Out(uart, Dll, 0x01);
        Out(uart, Dlm, 0x02);
        Assert.Equal(0x01, In(uart, Dll));
        Assert.Equal(0x02, In(uart, Dlm));
        Assert.Equal(0, _sink.Length); // the DLL write did not transmit

        Out(uart, Lcr, 0x03);
        Assert.Equal(0x05, In(uart, Ier)); // IER untouched by the DLM write
        Out(uart, Ier, 0x0A);

        Out(uart, Lcr, 0x83);
        Assert.Equal(0x01, In(uart, Dll));
        Assert.Equal(0x02, In(uart, Dlm));
        var state = uart.GetState();
        Assert.Equal(0x0A, state.Ier);
        Assert.Equal(0x01, state.Dll);
        Assert.Equal(0x02, state.Dlm);
    }

    [Fact]
    public void DivisorLatchHasA9600BaudDefault()
    {
        var uart = NewUart();
        Out(uart, Lcr, 0x80);
        Assert.Equal(12, In(uart, Dll));
        Assert.Equal(0, In(uart, Dlm));
    }

    [Fact]
    public void LcrScrAndMcrReadBack()
    {
        var uart = NewUart();
        Out(uart, Lcr, 0x1B);
        Out(uart, Scr, 0xA5);
        Out(uart, Mcr, 0xEB); // only bits 0-4 exist
        Assert.Equal(0x1B, In(uart, Lcr));
        Assert.Equal(0xA5, In(uart, Scr));
        Assert.Equal(0x0B, In(uart, Mcr));
    }

    [Fact]
    public void IerKeepsOnlyTheFourInterruptBits()
    {
        var uart = NewUart();
        Out(uart, Ier, 0xFF);
        Assert.Equal(0x0F, In(uart, Ier));
    }

    [Fact]
    public void ThrWritesGoToTheSinkInOrder()
    {
        var uart = NewUart();
        foreach (byte b in "hello\n"u8)
        {
            Out(uart, Thr, b);
        }

        Assert.Equal("hello\n", _sink.GetText());
    }

    [Fact]
    public void WideWritesAreSplitIntoConsecutiveRegisters()
    {
        var uart = NewUart();
        Out(uart, Lcr, 0x80);
        uart.Write(Dll, [0x34, 0x12]);
        Assert.Equal(0x34, In(uart, Dll));
        Assert.Equal(0x12, In(uart, Dlm));
        Span<byte> wide = stackalloc byte[2];
        uart.Read(Dll, wide);
        Assert.Equal([0x34, 0x12], wide.ToArray());
    }

    [Fact]
    public void LsrAlwaysReportsTransmitterEmpty()
    {
        var uart = NewUart();
        Assert.Equal(0x60, In(uart, Lsr));
        Out(uart, Thr, (byte)'x');
        Assert.Equal(0x60, In(uart, Lsr) & 0x60);
        Assert.Equal(0, In(uart, Lsr) & 0x01);
    }

    [Fact]
    public void ThrEmptyInterruptFiresWhenEnabledAndClearsOnIirRead()
    {
        var uart = NewUart();
        Assert.Equal(0x01, In(uart, Iir));
        Assert.False(_line.Level);

        Out(uart, Ier, 0x02);
        Assert.True(_line.Level);
        Assert.Equal(0x02, In(uart, Iir)); // reading it acknowledges
        Assert.False(_line.Level);
        Assert.Equal(0x01, In(uart, Iir));

        Out(uart, Thr, (byte)'a'); // transmitted at once: THR empty again
        Assert.True(_line.Level);
        Assert.Equal(0x02, In(uart, Iir));
        Assert.False(_line.Level);
        Assert.Equal([true, false, true, false], _line.Levels);
    }

    [Fact]
    public void ReenablingThrEmptyInterruptRaisesItAgain()
    {
        // Linux's 8250 driver flags a "THRE bug" unless this works.
        var uart = NewUart();
        Out(uart, Ier, 0x02);
        Assert.Equal(0x02, In(uart, Iir));
        Out(uart, Ier, 0x00);
        Out(uart, Ier, 0x02);
        Assert.Equal(0x02, In(uart, Iir));
    }

    [Fact]
    public void RewritingIerWithThreStillSetDoesNotRaiseItAgain()
    {
        var uart = NewUart();
        Out(uart, Ier, 0x02);
        Assert.Equal(0x02, In(uart, Iir));
        Out(uart, Ier, 0x03);
        Assert.Equal(0x01, In(uart, Iir));
    }

    [Fact]
    public void ThrEmptyIsNotReportedWhileDisabled()
    {
        var uart = NewUart();
        Out(uart, Thr, (byte)'a');
        Assert.Equal(0x01, In(uart, Iir));
        Assert.Empty(_line.Levels);
    }

    [Fact]
    public void ReceivedDataRaisesInterruptUntilDrained()
    {
        var uart = NewUart();
        Out(uart, Ier, 0x01);
        Assert.False(_line.Level);

        Assert.Equal(2, uart.EnqueueInput("ab"u8));
        Assert.True(_line.Level);
        Assert.Equal(0x04, In(uart, Iir));
        Assert.Equal(0x01, In(uart, Lsr) & 0x01);

        Assert.Equal((byte)'a', In(uart, Rbr));
        Assert.True(_line.Level); // still one byte left
        Assert.Equal((byte)'b', In(uart, Rbr));
        Assert.False(_line.Level);
        Assert.Equal(0, In(uart, Lsr) & 0x01);
        Assert.Equal(0x01, In(uart, Iir));
        Assert.Equal([true, false], _line.Levels);
    }

    [Fact]
    public void InputWhileReceiveInterruptDisabledDoesNotRaiseTheLineUntilEnabled()
    {
        var uart = NewUart();
        uart.EnqueueInput("z"u8);
        Assert.Empty(_line.Levels);
        Out(uart, Ier, 0x01);
        Assert.Equal([true], _line.Levels);
    }

    [Fact]
    public void LineIsOnlyDrivenOnChanges()
    {
        var uart = NewUart();
        Out(uart, Ier, 0x01);
        uart.EnqueueInput("a"u8);
        uart.EnqueueInput("b"u8);  // already high
        Out(uart, Scr, 1);          // unrelated
        In(uart, Lsr);
        In(uart, Rbr);
        In(uart, Rbr);
        In(uart, Rbr);              // empty read
        Assert.Equal([true, false], _line.Levels);
    }

    [Fact]
    public void InterruptPriorityFollowsTheDatasheet()
    {
        var uart = NewUart(inputCapacity: 2);
        Out(uart, Mcr, 0x10); // loopback: modem inputs change, setting delta bits
        Out(uart, Mcr, 0x00);
        uart.EnqueueInput("abc"u8); // one byte too many: overrun
        Out(uart, Ier, 0x0F);

        Assert.Equal(0x06, In(uart, Iir)); // line status
        Assert.Equal(0x02, In(uart, Lsr) & 0x02);
        Assert.Equal(0x04, In(uart, Iir)); // received data
        In(uart, Rbr);
        In(uart, Rbr);
        Assert.Equal(0x02, In(uart, Iir)); // THR empty, acknowledged by this read
        Assert.Equal(0x00, In(uart, Iir)); // modem status
        Assert.True(_line.Level);
        Assert.NotEqual(0, In(uart, Msr) & 0x0F);
        Assert.Equal(0x01, In(uart, Iir));
        Assert.False(_line.Level);
    }

    [Fact]
    public void LoopbackSendsTransmittedBytesBackAndMirrorsModemLines()
    {
        var uart = NewUart();
        Assert.Equal(0xB0, In(uart, Msr)); // DCD, DSR, CTS: a connected line

        // The check Linux's 8250 probe makes: loopback with OUT2|RTS must read CTS|DCD.
        Out(uart, Mcr, 0x1A);
        Assert.Equal(0x90, In(uart, Msr) & 0xF0);
        Out(uart, Mcr, 0x1F);
        Assert.Equal(0xF0, In(uart, Msr) & 0xF0);

        Out(uart, Ier, 0x01);
        Out(uart, Thr, (byte)'q');
        Assert.Equal(0, _sink.Length);
        Assert.True(_line.Level);
        Assert.Equal((byte)'q', In(uart, Rbr));
        Assert.False(_line.Level);

        Out(uart, Mcr, 0x00);
        Out(uart, Thr, (byte)'r');
        Assert.Equal("r", _sink.GetText());
        Assert.Equal(0xB0, In(uart, Msr) & 0xF0);
    }

    [Fact]
    public void ModemStatusDeltasAreSetOnChangeAndClearedByReading()
    {
        var uart = NewUart();
        Out(uart, Mcr, 0x10);      // loopback, all outputs low: CTS, DSR, DCD drop
        Assert.Equal(0x0B, In(uart, Msr)); // DCTS | DDSR | DDCD, status all low
        Assert.Equal(0x00, In(uart, Msr));
        Out(uart, Mcr, 0x14);      // OUT1 -> RI rises: no TERI
        Assert.Equal(0x40, In(uart, Msr));
        Out(uart, Mcr, 0x10);      // RI falls: trailing edge
        Assert.Equal(0x04, In(uart, Msr));
    }

    [Fact]
    public void ReceiveOverflowSetsOverrunAndRaisesLineStatusInterrupt()
    {
        var uart = NewUart(inputCapacity: 4);
        Out(uart, Ier, 0x04);
        Assert.Equal(4, uart.EnqueueInput("abcdef"u8));
        Assert.True(_line.Level);
        Assert.Equal(0x06, In(uart, Iir));
        Assert.Equal(0x03, In(uart, Lsr) & 0x03); // DR + OE
        Assert.False(_line.Level);
        Assert.Equal(0x01, In(uart, Lsr) & 0x03); // OE cleared by the read

        // The queued bytes are the first four; the rest were dropped.
        var got = new byte[4];
        for (int i = 0; i < got.Length; i++)
        {
            got[i] = In(uart, Rbr);
        }

        Assert.Equal("abcd"u8.ToArray(), got);
        Assert.Equal(0, In(uart, Lsr) & 0x01);
    }

    [Fact]
    public void InputQueueIsBounded()
    {
        var uart = NewUart();
        Assert.Equal(Serial16550.DefaultInputCapacity, uart.InputCapacity);
        var big = new byte[Serial16550.DefaultInputCapacity * 2];
        Assert.Equal(Serial16550.DefaultInputCapacity, uart.EnqueueInput(big));
        Assert.Equal(Serial16550.DefaultInputCapacity, uart.PendingInputCount);
        Assert.Equal(0, uart.EnqueueInput("x"u8));
        Assert.Equal(Serial16550.DefaultInputCapacity, uart.GetState().PendingInput.Length);
    }

    [Fact]
    public void FifoControlShowsInIirAndClearsTheReceiveQueue()
    {
        var uart = NewUart();
        Out(uart, Fcr, 0x01);
        Assert.Equal(0xC1, In(uart, Iir));
        uart.EnqueueInput("abc"u8);
        Out(uart, Fcr, 0x03); // clear receive FIFO
        Assert.Equal(0, uart.PendingInputCount);
        Assert.Equal(0, In(uart, Lsr) & 0x01);

        uart.EnqueueInput("d"u8);
        Out(uart, Fcr, 0x00); // FIFOs off: reset too
        Assert.Equal(0, uart.PendingInputCount);
        Assert.Equal(0x01, In(uart, Iir));
    }

    [Fact]
    public void StateRoundTripsThroughGetAndSet()
    {
        var uart = NewUart();
        Out(uart, Lcr, 0x80);
        Out(uart, Dll, 0x03);
        Out(uart, Dlm, 0x01);
        Out(uart, Lcr, 0x1B);
        Out(uart, Fcr, 0xC1);
        Out(uart, Mcr, 0x0B);
        Out(uart, Scr, 0x5A);
        Out(uart, Ier, 0x07);
        uart.EnqueueInput("pending"u8);
        var state = uart.GetState();

        Assert.Equal(0x07, state.Ier);
        Assert.Equal(0x1B, state.Lcr);
        Assert.Equal(0x0B, state.Mcr);
        Assert.Equal(0xC1, state.Fcr);
        Assert.Equal(0x5A, state.Scr);
        Assert.Equal(0x03, state.Dll);
        Assert.Equal(0x01, state.Dlm);
        Assert.True(state.ThrEmptyInterruptPending);
        Assert.Equal("pending"u8.ToArray(), state.PendingInput);

        var restoredLine = new FakeInterruptLine();
        var restored = new Serial16550(new MemorySerialSink(), restoredLine);
        restored.SetState(state);
        Assert.Equal(state, restored.GetState());
        Assert.True(restoredLine.Level); // RDA pending and enabled
        Assert.Equal(0xC4, In(restored, Iir));
        Assert.Equal((byte)'p', In(restored, Rbr));
    }

    [Fact]
    public void StateEqualityComparesPendingInputByContent()
    {
        var a = new Serial16550State { Ier = 1, PendingInput = [1, 2, 3] };
        var b = new Serial16550State { Ier = 1, PendingInput = [1, 2, 3] };
        var c = new Serial16550State { Ier = 1, PendingInput = [1, 2, 4] };
        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void SetStateRejectsMoreInputThanTheQueueHolds()
    {
        var uart = NewUart(inputCapacity: 2);
        var state = uart.GetState() with { PendingInput = [1, 2, 3] };
        Assert.Throws<ArgumentException>(() => uart.SetState(state));
    }

    [Fact]
    public void SetStateRestoresOverrunAndDropsItOnLowering()
    {
        var uart = NewUart();
        uart.SetState(new Serial16550State { Ier = 0x04, Lsr = 0x62, Msr = 0xB0 });
        Assert.True(_line.Level);
        Assert.Equal(0x62, In(uart, Lsr));
        Assert.False(_line.Level);
    }

    [Fact]
    public void SinkIsNotCalledUnderTheRegisterLock()
    {
        // A sink that needs the device from another thread would deadlock if the UART held its
        // register lock while calling it.
        Serial16550? uart = null;
        bool otherThreadFinished = false;
        var sink = new CallbackSink(_ =>
        {
            var t = new Thread(() => uart!.EnqueueInput("x"u8));
            t.Start();
            otherThreadFinished = t.Join(TimeSpan.FromSeconds(30));
        });
        uart = new Serial16550(sink, _line);
        Out(uart, Thr, (byte)'a');
        Assert.True(otherThreadFinished);
        Assert.Equal(1, uart.PendingInputCount);
    }

    [Fact]
    public void ConcurrentInputAndReadsLoseNothingAndKeepOrder()
    {
        const int total = 200_000;
        var uart = NewUart(inputCapacity: total);
        Out(uart, Ier, 0x01);
        var producer = new Thread(() =>
        {
            var chunk = new byte[100];
            for (int i = 0; i < total; i += chunk.Length)
            {
                for (int j = 0; j < chunk.Length; j++)
                {
                    chunk[j] = (byte)((i + j) % 251);
                }

                uart.EnqueueInput(chunk);
            }
        });
        producer.Start();

        int received = 0;
        bool inOrder = true;
        while (received < total)
        {
            if ((In(uart, Lsr) & 0x01) != 0)
            {
                byte b = In(uart, Rbr);
                inOrder &= b == (byte)(received % 251);
                received++;
            }
        }

        producer.Join();
        Assert.True(inOrder);
        Assert.Equal(0, In(uart, Lsr) & 0x02); // no overrun
        Assert.False(_line.Level);
        var levels = _line.Levels;
        for (int i = 0; i < levels.Count; i++)
        {
            Assert.Equal(i % 2 == 0, levels[i]); // strictly alternating: only changes are driven
        }
    }

    [Fact]
    public void UnknownOffsetsReadAllOnes()
    {
        var uart = NewUart();
        Assert.Equal(0xFF, In(uart, 8));
        Out(uart, 9, 0x12); // ignored, does not throw
        Assert.Equal(0, _sink.Length);
    }

    private sealed class CallbackSink(Action<byte[]> onWrite) : ISerialSink
    {
        public void Write(ReadOnlySpan<byte> data) => onWrite(data.ToArray());
    }
}
