using CsCheck;
using FireSharp.Memory;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Snapshot;

/// <summary>Guest memory mapped privately from a snapshot's memory file, and the sparse-scan helper.</summary>
public sealed class GuestMemoryFileTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static string MemoryFile(ulong size, params (ulong Offset, byte Value)[] bytes)
    {
        string path = Path.Combine(SnapshotTestSupport.TempDir(), "memory");
        using var f = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.SetLength(f, (long)size);
        foreach (var (offset, value) in bytes) RandomAccess.Write(f, new[] { value }, (long)offset);
        return path;
    }

    [Fact]
    public void FileBackedMemoryReadsTheFileAndWritesStayPrivate()
    {
        string path = MemoryFile(4 * MemoryLayout.MiB, (0x1234, 0xAB), (3 * MemoryLayout.MiB, 0xCD));
        using var a = GuestMemory.CreateFromFile(path, 4 * MemoryLayout.MiB);
        using var b = GuestMemory.CreateFromFile(path, 4 * MemoryLayout.MiB);
        Assert.Equal(path, a.BackingFilePath);
        Assert.Equal(0xAB, a.Read<byte>(0x1234));
        Assert.Equal(0xCD, a.Read<byte>(3 * MemoryLayout.MiB));
        a.Write<byte>(0x1234, 0x11);
        Assert.Equal(0x11, a.Read<byte>(0x1234));
        Assert.Equal(0xAB, b.Read<byte>(0x1234)); // the other mapping still sees the file
        Assert.Equal(0xAB, File.ReadAllBytes(path)[0x1234]); // and so does the file
    }

    [Fact]
    public void FileOfTheWrongSizeIsRefused()
    {
        string path = MemoryFile(2 * MemoryLayout.MiB);
        Assert.Throws<InvalidDataException>(() => GuestMemory.CreateFromFile(path, 4 * MemoryLayout.MiB));
        Assert.Throws<FileNotFoundException>(() => GuestMemory.CreateFromFile(path + ".missing", 2 * MemoryLayout.MiB));
    }

    private static HashSet<ulong> Pages(GuestMemory m) =>
        m.Regions.SelectMany(r => m.PossiblyNonZeroRuns(r))
            .SelectMany(run => Enumerable.Range(0, (int)(run.Length / 4096)).Select(i => run.Gpa + (ulong)i * 4096)).ToHashSet();

    private static bool ThpAlways =>
        File.Exists("/sys/kernel/mm/transparent_hugepage/enabled") && File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[always]");

    [Fact]
    public void ScanCoversEveryNonZeroPageAndSkipsUntouchedOnes()
    {
        Gen.Int[0, 2047].Array[1, 20].Sample(pages =>
        {
            using var anon = GuestMemory.CreateAnonymous(8 * MemoryLayout.MiB);
            foreach (var p in pages) anon.Write<byte>((ulong)p * 4096 + 7, 1);
            var found = Pages(anon);
            foreach (var p in pages) Assert.Contains((ulong)p * 4096, found);
            // Only the touched pages are present, unless transparent huge pages back whole 2 MiB ranges.
            if (!ThpAlways) Assert.True(found.Count <= pages.Distinct().Count(), $"{found.Count} pages reported for {pages.Distinct().Count()} touched");
        }, iter: 20);
    }

    [Fact]
    public void ScanOfAFileMappingCoversFileDataAndPrivateWrites()
    {
        ulong size = 8 * MemoryLayout.MiB;
        string path = MemoryFile(size, (5 * 4096 + 1, 1), (1000 * 4096, 2));
        using var m = GuestMemory.CreateFromFile(path, size);
        m.Write<byte>(1500 * 4096 + 9, 3); // a private write into a hole of the file
        var found = Pages(m);
        Assert.Contains(5UL * 4096, found);
        Assert.Contains(1000UL * 4096, found);
        Assert.Contains(1500UL * 4096, found);
        // Holes never touched are not candidates (how much of the data extents is reported depends on the file system).
        Assert.DoesNotContain(1800UL * 4096, found);
        Assert.True(found.Count < 1024, $"{found.Count} pages reported");
    }
}
