using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Kvm;

public sealed class ProcInfoTests
{
    [Fact]
    public void HostMemoryIsMemTotalInBytes()
    {
        var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
        ulong kib = ulong.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(kib * 1024, ProcInfo.HostMemoryBytes());
    }

    [Fact]
    public void OwnProcessIsAliveWithAStartTime()
    {
        Assert.True(ProcInfo.IsAlive(Environment.ProcessId));
        Assert.NotNull(ProcInfo.StartTime(Environment.ProcessId));
        Assert.Null(ProcInfo.StartTime(int.MaxValue));
    }
}
