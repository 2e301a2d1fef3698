using FireSharp.Memory;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Vm;

/// <summary>
/// Tests that count the whole test process's fds and mappings. They run alone (after every parallel collection),
/// since any other test opening a socket or a VM at the same time would move the counts.
/// </summary>
[CollectionDefinition("process-wide resources", DisableParallelization = true)]
public sealed class ProcessWideResources;

[Collection("process-wide resources")]
public sealed class ResourceLeakTests
{
    [SkippableFact]
    public void HundredCreateDestroyCyclesLeakNoFdsOrMappings()
    {
        KvmTestSupport.RequireKvm();
        // Warm up once so lazily created runtime fds are not counted as leaks.
        RunOnce();
        var before = Resources();
        for (int i = 0; i < 100; i++) RunOnce();
        var after = Resources();
        Assert.True(after.Fds <= before.Fds, $"fds grew from {before.Fds} to {after.Fds} over 100 VMs");
        Assert.Equal(0, after.KvmFds);          // VM and vCPU fds (anon_inode:kvm-vm / kvm-vcpu)
        Assert.Equal(0, after.KvmMappings);     // the vCPUs' kvm_run mappings
        Assert.Equal(before.GuestSizedMappings, after.GuestSizedMappings); // the 16 MiB guest RAM mappings

        static void RunOnce()
        {
            var (vm, console) = TinyGuestTests.Create("hello", memMib: 16);
            using (vm) Assert.Equal(VmExitKind.Reset, TinyGuestTests.RunToEnd(vm).Kind);
        }

        static (int Fds, int KvmFds, int KvmMappings, int GuestSizedMappings) Resources()
        {
            // Only the kinds of fd a VM opens (/dev/kvm, KVM's anon inodes, eventfds, epoll): sockets and pipes that
            // earlier tests' servers release asynchronously would otherwise move the count.
            var fds = new DirectoryInfo("/proc/self/fd").GetFiles()
                .Where(f => f.LinkTarget is { } t && (t.StartsWith("anon_inode:", StringComparison.Ordinal) || t == "/dev/kvm")).ToArray();
            int kvmFds = fds.Count(f => f.LinkTarget?.Contains("kvm-", StringComparison.Ordinal) == true);
            var maps = File.ReadAllLines("/proc/self/maps");
            int kvmMaps = maps.Count(l => l.Contains("kvm", StringComparison.Ordinal));
            int guestSized = maps.Count(l =>
            {
                var range = l.Split(' ')[0].Split('-');
                return Convert.ToUInt64(range[1], 16) - Convert.ToUInt64(range[0], 16) == 16 * MemoryLayout.MiB;
            });
            return (fds.Length, kvmFds, kvmMaps, guestSized);
        }
    }
}
