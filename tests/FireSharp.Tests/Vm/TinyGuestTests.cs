using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Memory;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Vm;

/// <summary>End-to-end KVM tests with the tiny PVH guests from tests/guests (ring-3 work, milliseconds even on PVM).</summary>
[Collection("kvm")]
public class TinyGuestTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    internal static (MicroVm Vm, MemorySerialSink Console) Create(string guest, string? cmdline = null, ulong memMib = 128, int vcpus = 1)
    {
        KvmTestSupport.RequireKvm();
        var console = new MemorySerialSink();
        var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest(guest), Cmdline = cmdline, MemoryMib = memMib, Vcpus = vcpus, Serial = console });
        return (vm, console);
    }

    internal static VmExit RunToEnd(MicroVm vm)
    {
        vm.Start();
        Assert.True(vm.Exited.Wait(Timeout), "guest did not finish in time");
        return vm.Exited.Result;
    }

    [SkippableFact]
    public void HelloPrintsOnComOneAndResets()
    {
        var (vm, console) = Create("hello");
        using (vm)
        {
            var exit = RunToEnd(vm);
            Assert.Equal(VmExitKind.Reset, exit.Kind);
            Assert.True(exit.IsClean);
            Assert.Equal("Hello from FireSharp tiny guest\n", console.GetText());
            Assert.Equal(BootEntryMode.Pvh32, vm.Plan.Mode);
        }
    }

    [SkippableFact]
    public void RingThreeComputeGivesTheReferenceResult()
    {
        var (vm, console) = Create("ring3-compute");
        using (vm)
        {
            Assert.Equal(VmExitKind.Reset, RunToEnd(vm).Kind);
            // Expected value computed independently by tests/guests/ring3-compute-ref.c.
            Assert.Equal("RESULT=5E81E70F14244996\n", console.GetText());
        }
    }

    [SkippableFact]
    public void PortWriteLoopCountsEveryExit()
    {
        var (vm, console) = Create("portio-loop", cmdline: "n=5000");
        using (vm)
        {
            var counter = new CountingDevice();
            vm.Machine.PortBus.Register(0x80, 1, counter, "POST port");
            Assert.Equal(VmExitKind.Reset, RunToEnd(vm).Kind);
            Assert.Equal("DONE\n", console.GetText());
            Assert.Equal(5000, counter.Writes);
        }
    }

    [SkippableFact]
    public void MmioExitsCarryAddressSizeAndData()
    {
        var (vm, console) = Create("mmio-probe");
        using (vm)
        {
            var probe = new RecordingDevice(readValue: 0xCAFEF00D);
            vm.Machine.MmioBus.Register(0xD000_0000, 0x1000, probe, "probe");
            Assert.Equal(VmExitKind.Reset, RunToEnd(vm).Kind);
            Assert.Equal("MMIO-DONE\n", console.GetText());
            Assert.Equal(
            [
                ('W', 0x0UL, 1, 0x11UL),
                ('W', 0x2UL, 2, 0x2233UL),
                ('W', 0x4UL, 4, 0x44556677UL),
                ('W', 0x8UL, 8, 0x8899AABBCCDDEEFFUL),
                ('R', 0x10UL, 4, 0xCAFEF00DUL),
                ('W', 0x14UL, 4, 0xCAFEF00DUL), // the guest wrote back what it read
            ], probe.Accesses);
        }
    }

    [SkippableFact]
    public void TripleFaultIsReported()
    {
        var (vm, console) = Create("triple-fault");
        using (vm)
        {
            var exit = RunToEnd(vm);
            Assert.Equal(VmExitKind.TripleFault, exit.Kind);
            Assert.False(exit.IsClean);
            Assert.Contains("triple fault", exit.Reason);
            Assert.Equal("TF\n", console.GetText());
        }
    }

    [SkippableFact]
    public void BootTimerRecordsBootDone()
    {
        var (vm, console) = Create("boot-timer");
        using (vm)
        {
            Assert.Null(vm.BootTimer.BootDone);
            Assert.False(vm.BootTimer.Done.IsCompleted);
            Assert.Equal(VmExitKind.Reset, RunToEnd(vm).Kind);
            Assert.Equal("BOOTED\n", console.GetText());
            Assert.NotNull(vm.BootTimer.BootDone);
            Assert.True(vm.BootTimer.Done.Wait(Timeout));
            Assert.Equal(vm.BootTimer.BootDone, vm.BootTimer.Done.Result);
        }
    }

    [SkippableFact]
    public void PauseFreezesTheGuestAndResumeContinuesIt()
    {
        var (vm, console) = Create("counter");
        using (vm)
        {
            vm.Start();
            Assert.True(console.WaitFor("COUNTING\n", Timeout));
            ulong Counter() => vm.Machine.Memory.Read<ulong>(0x200000);
            SpinWait.SpinUntil(() => Counter() > 0, Timeout);

            Assert.True(vm.Pause(Timeout));
            Assert.Equal(VmState.Paused, vm.Machine.State);
            ulong frozen = Counter();
            Thread.Sleep(100);
            Assert.Equal(frozen, Counter());

            vm.Resume();
            Assert.Equal(VmState.Running, vm.Machine.State);
            Assert.True(SpinWait.SpinUntil(() => Counter() > frozen, Timeout), "counter did not move after resume");

            var exit = vm.Stop(Timeout);
            Assert.Equal(VmExitKind.Stopped, exit.Kind);
            Assert.Equal(VmState.Exited, vm.Machine.State);
        }
    }

    [SkippableFact]
    public void StopWorksWhilePaused()
    {
        var (vm, console) = Create("counter");
        using (vm)
        {
            vm.Start();
            Assert.True(console.WaitFor("COUNTING\n", Timeout));
            Assert.True(vm.Pause(Timeout));
            Assert.Equal(VmExitKind.Stopped, vm.Stop(Timeout).Kind);
        }
    }

    [SkippableFact]
    public void TwoVcpusStartAndTheBootCpuRuns()
    {
        var (vm, console) = Create("hello", vcpus: 2);
        using (vm)
        {
            Assert.Equal(2, vm.Machine.Vcpus.Count);
            Assert.Equal(VmExitKind.Reset, RunToEnd(vm).Kind);
            Assert.Equal("Hello from FireSharp tiny guest\n", console.GetText());
        }
    }

    private sealed class CountingDevice : IBusDevice
    {
        public int Writes;
        public void Read(ulong offset, Span<byte> data) => data.Clear();
        public void Write(ulong offset, ReadOnlySpan<byte> data) => Writes++;
    }

    private sealed class RecordingDevice(uint readValue) : IBusDevice
    {
        public List<(char Kind, ulong Offset, int Size, ulong Value)> Accesses { get; } = [];

        public void Read(ulong offset, Span<byte> data)
        {
            Span<byte> v = stackalloc byte[8];
            BitConverter.TryWriteBytes(v, (ulong)readValue);
            v[..data.Length].CopyTo(data);
            Accesses.Add(('R', offset, data.Length, Value(data)));
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data) => Accesses.Add(('W', offset, data.Length, Value(data)));

        private static ulong Value(ReadOnlySpan<byte> data)
        {
            Span<byte> v = stackalloc byte[8];
            v.Clear();
            data.CopyTo(v);
            return BitConverter.ToUInt64(v);
        }
    }
}
