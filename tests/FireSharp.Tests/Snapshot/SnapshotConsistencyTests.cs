using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>A snapshot taken in the middle of a stream of I/O exits loses no instruction and repeats none.</summary>
[Collection("kvm")]
public sealed class SnapshotConsistencyTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private const int Rounds = 20000; // inout-loop.elf: IN then OUT on port 0x80, this many times

    /// <summary>
    /// Counts port accesses. The <c>trapAt</c>-th read (or write) holds the vCPU inside its exit
    /// handler until a pause has been requested, so the vCPU parks right after handling that exit.
    /// </summary>
    private sealed class CountingPort(VirtualMachine machine, bool trapReads, int trapAt) : IBusDevice
    {
        private int _reads, _writes;
        public ManualResetEventSlim Trapped { get; } = new();
        public int Reads => Volatile.Read(ref _reads);
        public int Writes => Volatile.Read(ref _writes);

        public void Read(ulong offset, Span<byte> data)
        {
            data.Clear();
            if (Interlocked.Increment(ref _reads) == trapAt && trapReads) Trap();
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (Interlocked.Increment(ref _writes) == trapAt && !trapReads) Trap();
        }

        private void Trap()
        {
            Trapped.Set();
            SpinWait.SpinUntil(() => machine.PauseRequested, TestTimeout);
        }
    }

    private sealed class PlainPort : IBusDevice
    {
        private int _reads, _writes;
        public int Reads => Volatile.Read(ref _reads);
        public int Writes => Volatile.Read(ref _writes);
        public void Read(ulong offset, Span<byte> data) { Interlocked.Increment(ref _reads); data.Clear(); }
        public void Write(ulong offset, ReadOnlySpan<byte> data) => Interlocked.Increment(ref _writes);
    }

    /// <summary>
    /// KVM finishes an I/O instruction (an IN's value into RAX, RIP past it; on hardware also an OUT)
    /// only on the next KVM_RUN after its exit was handled. A snapshot taken right after the handler
    /// must include that, or the restored guest runs the instruction a second time.
    /// </summary>
    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void PortAccessesAcrossASnapshotAddUpExactly(bool pauseAfterIn)
    {
        KvmTestSupport.RequireKvm();
        string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
        int reads, writes;
        using (var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("inout-loop"), MemoryMib = 16 }))
        {
            var port = new CountingPort(vm.Machine, pauseAfterIn, trapAt: 5000);
            vm.Machine.PortBus.Register(0x80, 1, port, "counting port");
            vm.Start();
            Assert.True(port.Trapped.Wait(TestTimeout), "inout-loop did not reach the trap");
            SnapshotWriter.Create(vm, dir, resume: false);
            (reads, writes) = (port.Reads, port.Writes);
            Assert.Equal(5000, pauseAfterIn ? reads : writes);
        }
        var console = new MemorySerialSink();
        using var restored = SnapshotRestore.Restore(dir, new RestoreOverrides { Resume = false, Serial = console });
        var port2 = new PlainPort();
        restored.Machine.PortBus.Register(0x80, 1, port2, "counting port");
        restored.Resume();
        Assert.True(restored.Exited.Wait(TestTimeout), "restored inout-loop did not finish");
        Assert.Equal(VmExitKind.Reset, restored.Exited.Result.Kind);
        Assert.Equal("DONE\n", console.GetText());
        Assert.Equal(Rounds, reads + port2.Reads);
        Assert.Equal(Rounds, writes + port2.Writes);
    }
}
