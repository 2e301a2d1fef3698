using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using FireSharp.Kvm.Interop;

namespace FireSharp.Snapshot;

/// <summary>
/// A snapshot's authentication: the sidecar file <c>vmstate.mac</c>, an HMAC-SHA256 under one of the daemon's keys.
/// <code>
///   0  magic "FSMAC001"                         8 bytes
///   8  key id length (u8), key id (ASCII)
///   …  memory file: inode (u64), size (i64), mtime in ns since the epoch (i64)
///   …  diff file present (u8: 0 or 1)
///   …  HMAC-SHA256 (32 bytes) over: every byte above, then the state file, then the diff file if present
/// </code>
/// A sidecar, not a trailer in <c>vmstate</c>: the state file keeps format version 1 and its CRC (a diff's base
/// identity) unchanged, an older FireSharp reads a signed snapshot as before, and an unsigned snapshot is named as
/// such ("no vmstate.mac") instead of failing as "unexpected bytes after the content". The check runs on the bytes
/// before they are parsed, so nothing a forged state file names (drives, the kernel, sockets) is ever opened; the
/// memory file is opened only after the MAC matched, and is refused if its inode, size or mtime changed.
/// </summary>
public static class SnapshotMac
{
    public const string FileName = "vmstate.mac";
    private const int MacBytes = 32;
    private static ReadOnlySpan<byte> Magic => "FSMAC001"u8;

    /// <summary>
    /// Computes one HMAC, so that the crypto library's one-time set-up (loading OpenSSL, which calls sysinfo and reads
    /// its configuration) happens now: an unjailed worker (which verifies the snapshots it restores) calls this before
    /// it installs its seccomp filter. A jailed worker never verifies, and could not load OpenSSL after its pivot_root.
    /// </summary>
    public static void WarmUp()
    {
        Span<byte> mac = stackalloc byte[MacBytes];
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, new byte[SnapshotKey.Bytes]);
        hmac.AppendData(Magic);
        hmac.GetHashAndReset(mac);
    }

    /// <summary>Signs the snapshot being written in <paramref name="dir"/> (its memory file is complete) and writes the sidecar.</summary>
    internal static byte[] Encode(string dir, ReadOnlySpan<byte> state, ReadOnlySpan<byte> diff, bool hasDiff, SnapshotKey key) =>
        Seal(MemoryIdentity(Path.Combine(dir, SnapshotWriter.MemoryFileName)), state, diff, hasDiff, key);

    private static byte[] Seal(FileIdentity memory, ReadOnlySpan<byte> state, ReadOnlySpan<byte> diff, bool hasDiff, SnapshotKey key)
    {
        var head = Head(key.Id, memory, hasDiff);
        var file = new byte[head.Length + MacBytes];
        head.CopyTo(file, 0);
        Compute(key, head, state, diff, file.AsSpan(head.Length));
        return file;
    }

    /// <summary>
    /// Signs a snapshot that is already in its final directory: the daemon, after it moved a worker's snapshot into
    /// place and made it its own (the worker never holds a key). Reads the state and diff files and fstats the memory
    /// file through one handle each, then writes <c>vmstate.mac</c> (0400) durably.
    /// </summary>
    public static void Sign(string dir, SnapshotKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        string full = Path.GetFullPath(dir);
        byte[] state, diff = [];
        bool hasDiff;
        FileIdentity memory;
        using (var stateFile = SnapshotFiles.OpenRequired(full, SnapshotWriter.StateFileName))
            state = SnapshotReader.ReadCapped(stateFile, Path.Combine(full, SnapshotWriter.StateFileName), SnapshotReader.MaxStateFileBytes, SnapshotErrorReason.Corrupt);
        using (var diffFile = SnapshotFiles.OpenOptional(full, DiffInfo.FileName))
        {
            hasDiff = diffFile is not null;
            if (diffFile is not null) diff = SnapshotReader.ReadCapped(diffFile, Path.Combine(full, DiffInfo.FileName), SnapshotReader.MaxStateFileBytes, SnapshotErrorReason.Corrupt);
        }
        using (var memoryFile = SnapshotFiles.OpenRequired(full, SnapshotWriter.MemoryFileName))
            memory = FileSystem.Identify(memoryFile, Path.Combine(full, SnapshotWriter.MemoryFileName));
        var file = Seal(memory, state, diff, hasDiff, key);
        try
        {
            SnapshotWriter.WriteFileDurably(Path.Combine(full, FileName), file);
            FileSystem.SyncDirectory(full);
        }
        catch (IOException e)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot sign snapshot {full}: {e.Message}", e);
        }
    }

    /// <summary>
    /// The verification of a snapshot directory (<see cref="SnapshotFiles.OpenVerifiedChain"/> calls it): its sidecar
    /// <paramref name="mac"/> against the state file's bytes (not yet parsed) and the diff file's. Returns the memory
    /// file's identity as recorded (checked by <see cref="VerifyMemory"/> once that file is open). Throws
    /// <see cref="SnapshotException"/> (Unauthenticated) when the sidecar is missing, names no key of
    /// <paramref name="keys"/>, or does not match.
    /// </summary>
    internal static FileIdentity VerifyState(string dir, ReadOnlySpan<byte> state, byte[]? mac, byte[]? diff, SnapshotKeys keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        string path = Path.Combine(dir, FileName);
        if (mac is null)
            throw Refused($"snapshot {dir} is not signed (no {FileName}): it was taken without a snapshot key or by an older FireSharp");
        if (mac.Length < Magic.Length + 1 || !mac.AsSpan().StartsWith(Magic))
            throw Refused($"{path} is not a FireSharp snapshot MAC file");
        int idLength = mac[Magic.Length];
        int headLength = Magic.Length + 1 + idLength + 8 + 8 + 8 + 1;
        if (mac.Length != headLength + MacBytes) throw Refused($"{path} has {mac.Length} bytes, not {headLength + MacBytes}");
        string keyId = Encoding.ASCII.GetString(mac, Magic.Length + 1, idLength);
        var key = keys.Find(keyId)
            ?? throw Refused($"snapshot {dir} is signed with key '{keyId}', which is not one of this host's snapshot keys [{string.Join(", ", keys.All.Select(k => k.Id))}]");
        var head = mac.AsSpan(0, headLength);
        bool hasDiff = head[^1] == 1;
        if (hasDiff != diff is not null)
            throw Refused($"snapshot {dir}: its {DiffInfo.FileName} file was {(hasDiff ? "removed" : "added")} after it was signed");
        Span<byte> expected = stackalloc byte[MacBytes];
        Compute(key, head, state, diff ?? [], expected);
        if (!CryptographicOperations.FixedTimeEquals(expected, mac.AsSpan(headLength)))
            throw Refused($"snapshot {dir}: HMAC-SHA256 mismatch under key '{keyId}': its state (or diff) file was changed or forged");

        int at = Magic.Length + 1 + idLength;
        return new FileIdentity(0, BinaryPrimitives.ReadUInt64LittleEndian(head[at..]),
            BinaryPrimitives.ReadInt64LittleEndian(head[(at + 8)..]), BinaryPrimitives.ReadInt64LittleEndian(head[(at + 16)..]));
    }

    /// <summary>After <see cref="VerifyState"/>: the memory file (fstat of the handle that is then used) must be the one recorded.</summary>
    internal static void VerifyMemory(string dir, FileIdentity recorded, FileIdentity memory)
    {
        var actual = memory with { Device = 0 };
        if (actual != recorded)
            throw Refused($"{Path.Combine(dir, SnapshotWriter.MemoryFileName)} changed after the snapshot (recorded inode {recorded.Inode}, {recorded.Size} bytes, mtime {recorded.MtimeNs} ns; " +
                $"now inode {actual.Inode}, {actual.Size} bytes, mtime {actual.MtimeNs} ns)");
    }

    /// <summary>The largest <c>vmstate.mac</c> read (real ones are under 100 bytes).</summary>
    internal const int MaxFileBytes = 4096;

    private static FileIdentity MemoryIdentity(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        return FileSystem.Identify(file, path);
    }

    private static byte[] Head(string keyId, FileIdentity memory, bool hasDiff)
    {
        var head = new byte[Magic.Length + 1 + keyId.Length + 8 + 8 + 8 + 1];
        Magic.CopyTo(head);
        head[Magic.Length] = (byte)keyId.Length;
        int at = Magic.Length + 1 + Encoding.ASCII.GetBytes(keyId, head.AsSpan(Magic.Length + 1));
        BinaryPrimitives.WriteUInt64LittleEndian(head.AsSpan(at), memory.Inode);
        BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(at + 8), memory.Size);
        BinaryPrimitives.WriteInt64LittleEndian(head.AsSpan(at + 16), memory.MtimeNs);
        head[^1] = hasDiff ? (byte)1 : (byte)0;
        return head;
    }

    private static void Compute(SnapshotKey key, ReadOnlySpan<byte> head, ReadOnlySpan<byte> state, ReadOnlySpan<byte> diff, Span<byte> mac)
    {
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key.Key);
        hmac.AppendData(head);
        hmac.AppendData(state);
        hmac.AppendData(diff);
        hmac.GetHashAndReset(mac);
    }

    internal static SnapshotException Refused(string message) => new(SnapshotErrorReason.Unauthenticated, message);
}
