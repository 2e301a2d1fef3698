using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Proto.Worker;
using FireSharp.Vm;

namespace FireSharp.Worker;

/// <summary>
/// Reads a machine's counters for the daemon's metrics (worker.proto's MachineMetrics): the devices' own counters
/// (virtio-blk, virtio-net, virtio-vsock), their rate limiters' throttle time, and the vCPUs' KVM exits. Every
/// counter is an interlocked field read from any thread, so this takes no lock of the machine's and runs beside a
/// slow stop or snapshot.
/// </summary>
internal static class WorkerMetrics
{
    /// <summary>The counters of <paramref name="vm"/>; empty when there is no machine.</summary>
    public static MachineMetrics Read(MicroVm? vm)
    {
        var m = new MachineMetrics();
        if (vm is null) return m;
        foreach (var blk in vm.Devices.OfType<VirtioBlock>())
        {
            var (requests, read, written, flushes) = blk.Counters;
            m.Drives.Add(new BlockMetrics
            {
                Id = ConfigId(blk.Id), Requests = (ulong)requests, ReadBytes = (ulong)read, WrittenBytes = (ulong)written, Flushes = (ulong)flushes,
                ThrottledSeconds = blk.RateLimiter.ThrottledTime.TotalSeconds,
            });
        }
        foreach (var net in vm.Devices.OfType<VirtioNet>())
        {
            var c = net.Counters;
            m.Nics.Add(new NetMetrics
            {
                Id = ConfigId(net.Id), RxPackets = (ulong)c.RxFrames, RxBytes = (ulong)c.RxBytes, RxDropped = (ulong)c.RxDropped,
                TxPackets = (ulong)c.TxFrames, TxBytes = (ulong)c.TxBytes, TxDropped = (ulong)c.TxDropped,
                RxThrottledSeconds = net.RxLimiter.ThrottledTime.TotalSeconds, TxThrottledSeconds = net.TxLimiter.ThrottledTime.TotalSeconds,
            });
        }
        foreach (var vsock in vm.Devices.OfType<VirtioVsock>())
        {
            var (rsts, packetsIn, packetsOut) = vsock.Counters;
            var (opened, open) = vsock.Connections;
            m.Vsock = new VsockMetrics
            {
                ConnectionsOpened = (ulong)opened, ConnectionsOpen = (ulong)Math.Max(0, open), ConnectionsRefused = (ulong)vsock.ConnectionsRefused,
                PacketsIn = (ulong)packetsIn, PacketsOut = (ulong)packetsOut, Rsts = (ulong)rsts,
            };
        }
        var exits = vm.Machine.ExitCounts;
        m.Exits = new KvmExitMetrics { Io = (ulong)exits.Io, Mmio = (ulong)exits.Mmio, Interrupted = (ulong)exits.Interrupted, Other = (ulong)exits.Other };
        return m;
    }

    /// <summary>The id the VM's config gave the device ("d0" of the device id "virtio-blk:d0").</summary>
    private static string ConfigId(string deviceId) => deviceId[(deviceId.IndexOf(':', StringComparison.Ordinal) + 1)..];
}
