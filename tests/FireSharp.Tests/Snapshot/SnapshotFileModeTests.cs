using System.Diagnostics;
using System.Globalization;
using FireSharp.Kvm.Interop;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// Issue 18: snapshots are the tenant's secrets (all of guest RAM). The snapshot directory is 0700 and its
/// files 0400, owned by the writer's user, whatever the umask it runs under.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SnapshotFileModeTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    /// <summary>Asserts the snapshot directory is 0700 and every file in it 0400, all owned by this (the writer's) user.</summary>
    public static void AssertPrivate(string dir)
    {
        Assert.Equal(SnapshotWriter.PrivateDirectoryMode, File.GetUnixFileMode(dir));
        Assert.Equal(ProcInfo.EffectiveUserId, Owner(dir));
        var files = Directory.GetFiles(dir);
        Assert.Contains(Path.Combine(dir, SnapshotWriter.StateFileName), files);
        Assert.Contains(Path.Combine(dir, SnapshotWriter.MemoryFileName), files);
        foreach (var file in files)
        {
            Assert.True(File.GetUnixFileMode(file) == SnapshotWriter.PrivateFileMode, $"{file} is {File.GetUnixFileMode(file)}, not 0400");
            Assert.Equal(ProcInfo.EffectiveUserId, Owner(file));
        }
    }

    private static uint Owner(string path)
    {
        var psi = new ProcessStartInfo("stat", ["-c", "%u", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(TestTimeout));
        return uint.Parse(output.Trim(), CultureInfo.InvariantCulture);
    }

    [SkippableFact]
    public void InProcessSnapshotsAndDiffsArePrivate()
    {
        var (vm, _) = StartCounter();
        using (vm)
        {
            string work = SnapshotTestSupport.TempDir();
            string full = Path.Combine(work, "full"), diff = Path.Combine(work, "diff");
            SnapshotWriter.Create(vm, full, resume: true, trackDirty: true);
            SnapshotWriter.Create(vm, diff, resume: false, diff: true);
            AssertPrivate(full);
            AssertPrivate(diff);
            Assert.Contains(Path.Combine(diff, DiffInfo.FileName), Directory.GetFiles(diff));
        }
    }

    [SkippableFact]
    public void FiresharpRunWritesPrivateSnapshotsUnderUmask000()
    {
        KvmTestSupport.RequireKvm();
        string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
        var psi = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in (string[])["-c", "umask 000 && exec \"$0\" \"$@\"", FiresharpExe(), "run", "--kernel", TestPaths.Guest("counter"),
                     "--mem-mib", "32", "--snapshot-dir", dir, "--snapshot-after-ms", "100", "--snapshot-exit"])
            psi.ArgumentList.Add(a);
        var (code, _, stderr) = Finish(Process.Start(psi)!);
        Assert.True(code == 0, $"firesharp run exited {code}: {stderr}");
        AssertPrivate(dir);
    }
}
