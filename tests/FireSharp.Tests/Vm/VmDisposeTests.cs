using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Vm;

/// <summary>Disposing a VM whose vCPU thread does not stop in time must not unmap memory under that thread.</summary>
[Collection("kvm")]
public sealed class VmDisposeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Port 0x80: the first write blocks the vCPU thread until the test lets it go.</summary>
    private sealed class StuckDevice : IBusDevice
    {
        public ManualResetEventSlim Entered { get; } = new();
        public ManualResetEventSlim Release { get; } = new();

        public void Read(ulong offset, Span<byte> data) => data.Clear();

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            Entered.Set();
            Release.Wait(Timeout);
        }
    }

    [SkippableFact]
    public void A_vcpu_stuck_past_the_stop_timeout_keeps_its_memory_mapped_until_it_ends()
    {
        KvmTestSupport.RequireKvm();
        var machine = VirtualMachine.Create(new MachineOptions { MemoryBytes = 16 * 1024 * 1024, StopTimeout = TimeSpan.FromMilliseconds(200) });
        var device = new StuckDevice();
        machine.PortBus.Register(0x80, 1, device, "stuck");
        var plan = BootLoader.Prepare(machine.Memory, new BootRequest { KernelPath = TestPaths.Guest("portio-loop"), Cmdline = "n=3" });
        CpuSetup.SetupPvh(machine.Vcpus[0], machine.Memory, plan.EntryRip, plan.BootInfoGpa);
        var memory = machine.Memory;
        byte[] code = memory.GetReadOnlySpan(plan.EntryRip, 16).ToArray();
        machine.Start();
        Assert.True(device.Entered.Wait(Timeout), "the guest never wrote to port 0x80");

        machine.Dispose(); // the vCPU thread is still in the device: the stop times out
        Assert.False(machine.Exited.IsCompleted);
        Assert.False(memory.IsDisposed);
        Assert.Equal(code, memory.GetReadOnlySpan(plan.EntryRip, 16).ToArray()); // still mapped, still the guest's

        device.Release.Set(); // the thread carries on: back into KVM_RUN, sees the stop, ends
        Assert.True(machine.Exited.Wait(Timeout), "the vCPU thread did not end once released");
        Assert.Equal(VmExitKind.Stopped, machine.Exited.Result.Kind);
        Assert.True(SpinWait.SpinUntil(() => memory.IsDisposed, Timeout), "the memory was not released after the last vCPU thread ended");
        Assert.Throws<ObjectDisposedException>(() => memory.Read<byte>(plan.EntryRip));
    }
}
