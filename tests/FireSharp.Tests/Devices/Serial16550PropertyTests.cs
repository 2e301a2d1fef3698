using CsCheck;
using FireSharp.Devices.Legacy;

namespace FireSharp.Tests.Devices;

public class Serial16550PropertyTests
{
    /// <summary>One step a guest or the host can take.</summary>
    public readonly record struct Op(int Kind, int Offset, byte Value, int Length)
    {
        public override string ToString() => Kind switch
        {
            0 => $"in {Offset}",
            1 => $"out {Offset},{Value:x2}",
            _ => $"input x{Length}",
        };
    }

    private static readonly Gen<Op> GenOp =
        Gen.Select(Gen.Int[0, 2], Gen.Int[0, 8], Gen.Byte, Gen.Int[0, 6],
            (kind, offset, value, length) => new Op(kind, offset, value, length));

    private static readonly Gen<Op[]> GenOps = GenOp.Array[0, 80];

    /// <summary>"Some enabled interrupt is pending", computed from the state alone.</summary>
    private static bool ExpectedPending(Serial16550State s) =>
        ((s.Ier & 0x01) != 0 && s.PendingInput.Length > 0)
        || ((s.Ier & 0x02) != 0 && s.ThrEmptyInterruptPending)
        || ((s.Ier & 0x04) != 0 && (s.Lsr & 0x1E) != 0)
        || ((s.Ier & 0x08) != 0 && (s.Msr & 0x0F) != 0);

    [Fact]
    public void RandomRegisterTrafficKeepsTheLineEqualToPendingInterrupts()
    {
        GenOps.Sample(ops =>
        {
            var sink = new MemorySerialSink();
            var line = new FakeInterruptLine();
            var uart = new Serial16550(sink, line, inputCapacity: 5);
            var expectedOutput = new List<byte>();
            byte next = 0;

            foreach (var op in ops)
            {
                var before = uart.GetState();
                switch (op.Kind)
                {
                    case 0:
                    {
                        Span<byte> b = stackalloc byte[1];
                        uart.Read((ulong)op.Offset, b);
                        break;
                    }
                    case 1:
                        uart.Write((ulong)op.Offset, [op.Value]);
                        if (op.Offset == 0 && (before.Lcr & 0x80) == 0 && (before.Mcr & 0x10) == 0)
                        {
                            expectedOutput.Add(op.Value);
                        }

                        break;
                    default:
                    {
                        var input = new byte[op.Length];
                        for (int i = 0; i < input.Length; i++)
                        {
                            input[i] = next++;
                        }

                        int accepted = uart.EnqueueInput(input);
                        int room = uart.InputCapacity - before.PendingInput.Length;
                        Assert.Equal(Math.Min(room, input.Length), accepted);
                        break;
                    }
                }

                var after = uart.GetState();
                Assert.Equal(ExpectedPending(after), line.Level);
                Assert.Equal(ExpectedPending(after), uart.InterruptPending);
                Assert.True(after.PendingInput.Length <= uart.InputCapacity);
                Assert.Equal(0x60, after.Lsr & 0x60);
            }

            // The line was only ever toggled, never re-driven to the level it already had.
            var levels = line.Levels;
            for (int i = 0; i < levels.Count; i++)
            {
                Assert.Equal(i % 2 == 0, levels[i]);
            }

            Assert.Equal(expectedOutput.ToArray(), sink.ToArray());
        }, iter: 2000);
    }

    [Fact]
    public void StateSurvivesARoundTripAfterAnyTraffic()
    {
        GenOps.Sample(ops =>
        {
            var uart = new Serial16550(NullSerialSink.Instance, new FakeInterruptLine(), inputCapacity: 5);
            foreach (var op in ops)
            {
                switch (op.Kind)
                {
                    case 0:
                        uart.Read((ulong)op.Offset, new byte[1]);
                        break;
                    case 1:
                        uart.Write((ulong)op.Offset, [op.Value]);
                        break;
                    default:
                        uart.EnqueueInput(new byte[op.Length]);
                        break;
                }
            }

            var state = uart.GetState();
            var copy = new Serial16550(NullSerialSink.Instance, new FakeInterruptLine(), inputCapacity: 5);
            copy.SetState(state);
            Assert.Equal(state, copy.GetState());

            // Both devices now answer the same register reads identically.
            for (ulong offset = 0; offset < Serial16550.PortCount; offset++)
            {
                var a = new byte[1];
                var b = new byte[1];
                uart.Read(offset, a);
                copy.Read(offset, b);
                Assert.Equal(a, b);
            }
        }, iter: 1000);
    }
}
