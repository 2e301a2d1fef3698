using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// Issue 18: a snapshot's state file is authenticated (HMAC-SHA256 in <c>vmstate.mac</c>) under a key ring; one that
/// fails is refused (Unauthenticated) before it is parsed and before anything it names, its memory file included,
/// is opened. No KVM VM is created for a refused snapshot.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SnapshotAuthenticationTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static string State(string dir) => Path.Combine(dir, SnapshotWriter.StateFileName);
    private static string Memory(string dir) => Path.Combine(dir, SnapshotWriter.MemoryFileName);

    private static SnapshotException AssertUnauthenticated(string dir, SnapshotKeys keys)
    {
        int before = KvmVmFds();
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, new RestoreOverrides { Keys = keys, Resume = false }));
        Assert.Equal(SnapshotErrorReason.Unauthenticated, e.Reason);
        Assert.Equal(before, KvmVmFds());
        return e;
    }

    private static void AssertRestores(string dir, SnapshotKeys keys)
    {
        using var vm = SnapshotRestore.Restore(dir, new RestoreOverrides { Keys = keys, Resume = false });
        Assert.Equal(Sentinel, vm.Machine.Memory.Read<ulong>(CounterGpa));
    }

    [SkippableFact]
    public void TheKeyRingIsCreatedPrivateAndTheNewestKeySigns()
    {
        string dir = Path.Combine(SnapshotTestSupport.TempDir(), "keys");
        var first = SnapshotKeys.OpenOrCreate(dir);
        Assert.Single(first.All);
        Assert.Equal(SnapshotWriter.PrivateDirectoryMode, File.GetUnixFileMode(dir));
        string keyFile = Path.Combine(dir, first.Signing.Id + SnapshotKeys.KeyFileExtension);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));
        Assert.Equal(SnapshotKey.Bytes, new FileInfo(keyFile).Length);
        // A second start reuses the key; a rotation adds one that signs from then on.
        Assert.Equal(first.Signing.Id, SnapshotKeys.OpenOrCreate(dir).Signing.Id);
        var added = SnapshotKeys.AddKey(dir);
        var rotated = SnapshotKeys.OpenOrCreate(dir);
        Assert.Equal(2, rotated.All.Count);
        Assert.Equal(added.Id, rotated.Signing.Id);
        Assert.NotEqual(first.Signing.Key, added.Key);
    }

    [SkippableFact]
    public void AFlippedByteWithItsCrcRecomputedIsRefusedBeforeTheMemoryFileIsOpened()
    {
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(SnapshotTestSupport.TempDir(), "keys"));
        string snap = TakeCounterSnapshot(16, keys.Signing);
        Assert.True(File.Exists(Path.Combine(snap, SnapshotMac.FileName)));
        AssertRestores(snap, keys);

        byte[] original = File.ReadAllBytes(State(snap));
        // Every region of the content: the config (drive paths live there), vCPU state, device state.
        foreach (int offset in (int[])[0, 40, (original.Length - SnapshotFormat.HeaderLength) / 2, original.Length - SnapshotFormat.HeaderLength - 1])
        {
            File.WriteAllBytes(State(snap), FlipContentByteWithValidCrc(original, offset));
            Assert.Contains("HMAC-SHA256 mismatch", AssertUnauthenticated(snap, keys).Message);
            // Without keys (in-process, trusted) the CRC is all there is, and it was recomputed: it passes that check.
        }
        // The memory file is not even looked at: with it gone, the refusal is still the MAC's, not NotFound.
        File.WriteAllBytes(State(snap), FlipContentByteWithValidCrc(original, 8));
        string moved = Memory(snap) + ".away";
        File.Move(Memory(snap), moved);
        AssertUnauthenticated(snap, keys);
        File.Move(moved, Memory(snap));
        // The header too (the CRC field itself) is covered.
        var header = (byte[])original.Clone();
        header[24] ^= 1;
        File.WriteAllBytes(State(snap), header);
        AssertUnauthenticated(snap, keys);

        File.WriteAllBytes(State(snap), original);
        AssertRestores(snap, keys);
    }

    [SkippableFact]
    public void AWrongKeyAMissingMacAndAChangedMemoryFileAreRefused()
    {
        string work = SnapshotTestSupport.TempDir();
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(work, "keys"));
        var other = SnapshotKeys.OpenOrCreate(Path.Combine(work, "other"));
        string snap = TakeCounterSnapshot(16, keys.Signing);

        Assert.Contains("not one of this host's snapshot keys", AssertUnauthenticated(snap, other).Message);
        // Same id, different bytes: the MAC does not match.
        var impostor = new SnapshotKeys([new SnapshotKey(keys.Signing.Id, other.Signing.Key)]);
        Assert.Contains("mismatch", AssertUnauthenticated(snap, impostor).Message);

        // An unsigned snapshot (or one whose MAC file was removed) is refused when keys are required.
        string unsigned = TakeCounterSnapshot(16);
        Assert.Contains("not signed", AssertUnauthenticated(unsigned, keys).Message);

        // A memory file touched after the snapshot: same bytes, new mtime.
        AssertRestores(snap, keys);
        string reference = Path.Combine(work, "mtime-reference");
        Touch("-r", Memory(snap), reference); // keeps the exact (ns) mtime
        File.SetLastWriteTimeUtc(Memory(snap), File.GetLastWriteTimeUtc(reference).AddSeconds(1));
        Assert.Contains("changed after the snapshot", AssertUnauthenticated(snap, keys).Message);
        Touch("-r", reference, Memory(snap));
        AssertRestores(snap, keys);
        // Replaced by a copy: same content, same size, same mtime, another inode.
        string copy = Memory(snap) + ".copy";
        File.Copy(Memory(snap), copy);
        Touch("-r", reference, copy);
        File.Move(copy, Memory(snap), overwrite: true);
        Assert.Contains("changed after the snapshot", AssertUnauthenticated(snap, keys).Message);
    }

    private static void Touch(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("touch", args) { UseShellExecute = false };
        using var p = System.Diagnostics.Process.Start(psi)!;
        Assert.True(p.WaitForExit(TestTimeout));
        Assert.Equal(0, p.ExitCode);
    }

    [SkippableFact]
    public void ARotatedKeyRingStillVerifiesOldSnapshotsAndSignsWithTheNewKey()
    {
        string keyDir = Path.Combine(SnapshotTestSupport.TempDir(), "keys");
        var before = SnapshotKeys.OpenOrCreate(keyDir);
        string old = TakeCounterSnapshot(16, before.Signing);
        var added = SnapshotKeys.AddKey(keyDir);
        var after = SnapshotKeys.OpenOrCreate(keyDir);
        Assert.Equal(added.Id, after.Signing.Id);
        string fresh = TakeCounterSnapshot(16, after.Signing);
        AssertRestores(old, after);
        AssertRestores(fresh, after);
        // The new snapshot is signed with the new key only.
        AssertUnauthenticated(fresh, before);
        AssertRestores(fresh, new SnapshotKeys([added]));
    }

    [SkippableFact]
    public void ASignedDiffChainVerifiesEveryLink()
    {
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(SnapshotTestSupport.TempDir(), "keys"));
        var (vm, _) = StartCounter();
        string work = SnapshotTestSupport.TempDir();
        string full = Path.Combine(work, "full"), diff = Path.Combine(work, "diff");
        using (vm)
        {
            SnapshotWriter.Create(vm, full, resume: true, trackDirty: true, signingKey: keys.Signing);
            SnapshotWriter.Create(vm, diff, resume: false, diff: true, signingKey: keys.Signing);
        }
        using (SnapshotRestore.Restore(diff, new RestoreOverrides { Keys = keys, Resume = false })) { }
        // The base's state file forged: the diff's restore refuses it through the base's MAC.
        byte[] original = File.ReadAllBytes(State(full));
        File.WriteAllBytes(State(full), FlipContentByteWithValidCrc(original, 40));
        int fds = KvmVmFds();
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(diff, new RestoreOverrides { Keys = keys, Resume = false }));
        Assert.Contains("HMAC-SHA256 mismatch", e.Message);
        Assert.Equal(fds, KvmVmFds());
        // The diff file is covered by the diff snapshot's MAC.
        File.WriteAllBytes(State(full), original);
        string diffFile = Path.Combine(diff, DiffInfo.FileName);
        var diffBytes = File.ReadAllBytes(diffFile);
        diffBytes[^9] ^= 1;
        File.WriteAllBytes(diffFile, diffBytes);
        AssertUnauthenticated(diff, keys);
    }

    [SkippableFact]
    public void FiresharpRunRestoreNeedsAKeyOrTheInsecureFlag()
    {
        string keyDir = Path.Combine(SnapshotTestSupport.TempDir(), "keys");
        var keys = SnapshotKeys.OpenOrCreate(keyDir);
        string snap = TakeCounterSnapshot(16, keys.Signing);

        var (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--exit-after-ms", "50");
        Assert.Equal(2, code);
        Assert.Contains("--snapshot-key", stderr);
        Assert.Contains("--insecure-unauthenticated", stderr);

        string keyFile = Path.Combine(keyDir, keys.Signing.Id + SnapshotKeys.KeyFileExtension);
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", keyFile, "--exit-after-ms", "50");
        Assert.True(code == 0, stderr);
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", keyDir, "--exit-after-ms", "50");
        Assert.True(code == 0, stderr);

        // Another host's key: refused, naming the key the snapshot was signed with.
        string otherDir = Path.Combine(SnapshotTestSupport.TempDir(), "other");
        SnapshotKeys.OpenOrCreate(otherDir);
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", otherDir, "--exit-after-ms", "50");
        Assert.Equal(2, code);
        Assert.Contains("Unauthenticated", stderr);
        Assert.Contains(keys.Signing.Id, stderr);
        // Not a key file.
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", State(snap), "--exit-after-ms", "50");
        Assert.Equal(2, code);
        Assert.Contains("--snapshot-key", stderr);

        // Forged, with the CRC recomputed: refused; the insecure flag restores what the CRC accepts.
        File.WriteAllBytes(State(snap), FlipContentByteWithValidCrc(File.ReadAllBytes(State(snap)), 40));
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", keyFile, "--exit-after-ms", "50");
        Assert.Equal(2, code);
        Assert.Contains("Unauthenticated", stderr);
        Assert.Contains(snap, stderr);
        (code, _, stderr) = RunFiresharp("run", "--restore", snap, "--snapshot-key", keyFile, "--insecure-unauthenticated");
        Assert.Equal(2, code);
        Assert.Contains("exclude each other", stderr);
    }

    [SkippableFact]
    public void FiresharpRunSignsItsSnapshotWithTheKey()
    {
        KvmTestSupport.RequireKvm();
        string keyDir = Path.Combine(SnapshotTestSupport.TempDir(), "keys");
        var keys = SnapshotKeys.OpenOrCreate(keyDir);
        string dir = Path.Combine(SnapshotTestSupport.TempDir(), "snap");
        var (code, _, stderr) = RunFiresharp("run", "--kernel", TestPaths.Guest("counter"), "--mem-mib", "16", "--snapshot-dir", dir,
            "--snapshot-after-ms", "100", "--snapshot-exit", "--snapshot-key", keyDir);
        Assert.True(code == 0, stderr);
        SnapshotFiles.Verify(dir, keys);
        var other = SnapshotKeys.OpenOrCreate(Path.Combine(SnapshotTestSupport.TempDir(), "other"));
        Assert.Equal(SnapshotErrorReason.Unauthenticated, Assert.Throws<SnapshotException>(() => SnapshotFiles.Verify(dir, other)).Reason);
    }
}
