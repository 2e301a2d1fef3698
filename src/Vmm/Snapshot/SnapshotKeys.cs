using System.Globalization;
using System.Security.Cryptography;
using FireSharp.Kvm.Interop;

namespace FireSharp.Snapshot;

/// <summary>One HMAC-SHA256 key that signs or verifies snapshots: 32 random bytes and a short id recorded in each snapshot.</summary>
public sealed record SnapshotKey
{
    public const int Bytes = 32;

    public SnapshotKey(string id, byte[] key)
    {
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(key);
        if (!IsValidId(id)) throw new ArgumentException($"snapshot key id '{id}' is not 1-64 characters of [A-Za-z0-9_-]", nameof(id));
        if (key.Length != Bytes) throw new ArgumentException($"snapshot key '{id}' has {key.Length} bytes, not {Bytes}", nameof(key));
        Id = id;
        Key = key;
    }

    public string Id { get; }
    public byte[] Key { get; }

    public static bool IsValidId(string id) =>
        id.Length is > 0 and <= 64 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_');

    /// <summary>Reads a key file: exactly 32 bytes; the id is the file name without <c>.key</c>.</summary>
    public static SnapshotKey Load(string path)
    {
        string id = Path.GetFileNameWithoutExtension(path);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        long length = RandomAccess.GetLength(file);
        if (length != Bytes) throw new InvalidDataException($"snapshot key file {path} has {length} bytes, not {Bytes}");
        var key = new byte[Bytes];
        if (RandomAccess.Read(file, key, 0) != Bytes) throw new InvalidDataException($"snapshot key file {path}: short read");
        return new SnapshotKey(id, key);
    }
}

/// <summary>
/// The keys a daemon signs and verifies snapshots with. The newest signs (<see cref="Signing"/>); every key verifies,
/// so after a rotation the snapshots signed with older keys still restore. On disk this is a directory of
/// <c>&lt;id&gt;.key</c> files (32 bytes, 0600) in a 0700 directory; ids sort by creation time, so the newest is last.
/// </summary>
public sealed class SnapshotKeys
{
    public const string KeyFileExtension = ".key";

    public SnapshotKeys(IEnumerable<SnapshotKey> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        All = [.. keys.OrderBy(k => k.Id, StringComparer.Ordinal)];
        if (All.Count == 0) throw new ArgumentException("a snapshot key ring needs at least one key", nameof(keys));
        if (All.Select(k => k.Id).Distinct(StringComparer.Ordinal).Count() != All.Count) throw new ArgumentException("snapshot key ids must be distinct", nameof(keys));
    }

    /// <summary>Every key, oldest first.</summary>
    public IReadOnlyList<SnapshotKey> All { get; }

    /// <summary>The newest key: new snapshots are signed with it.</summary>
    public SnapshotKey Signing => All[^1];

    public SnapshotKey? Find(string id) => All.FirstOrDefault(k => k.Id == id);

    /// <summary>
    /// The key ring in <paramref name="directory"/>, created (0700) with a first key if it has none: the daemon's
    /// first start creates its key. Key files are 0600 whatever the umask.
    /// </summary>
    public static SnapshotKeys OpenOrCreate(string directory)
    {
        FileSystem.TryCreateDirectory(directory, SnapshotWriter.PrivateDirectoryMode);
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(directory, SnapshotWriter.PrivateDirectoryMode);
        var keys = LoadDirectory(directory);
        return keys.Count > 0 ? new SnapshotKeys(keys) : new SnapshotKeys([AddKey(directory)]);
    }

    /// <summary>Adds a new key to <paramref name="directory"/> (a rotation): it signs from now on; the old ones still verify.</summary>
    public static SnapshotKey AddKey(string directory)
    {
        // Sortable by creation time (ms), then random: never the same id twice, and the newest sorts last.
        string id = $"k{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString("D14", CultureInfo.InvariantCulture)}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
        var key = new SnapshotKey(id, RandomNumberGenerator.GetBytes(SnapshotKey.Bytes));
        string path = Path.Combine(directory, id + KeyFileExtension);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (OperatingSystem.IsLinux()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var file = new FileStream(path, options))
        {
            file.Write(key.Key);
            file.Flush(flushToDisk: true);
        }
        if (OperatingSystem.IsLinux()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        FileSystem.SyncDirectory(directory);
        return key;
    }

    /// <summary>Every <c>*.key</c> file of a directory (none if it is missing).</summary>
    public static List<SnapshotKey> LoadDirectory(string directory) =>
        Directory.Exists(directory)
            ? [.. Directory.GetFiles(directory, "*" + KeyFileExtension).Where(p => SnapshotKey.IsValidId(Path.GetFileNameWithoutExtension(p))).Select(SnapshotKey.Load)]
            : [];

    /// <summary>A key file given by hand (<c>firesharp run --snapshot-key FILE</c>), or a directory of them.</summary>
    public static SnapshotKeys FromPath(string path) =>
        Directory.Exists(path) ? new SnapshotKeys(LoadDirectory(path)) : new SnapshotKeys([SnapshotKey.Load(path)]);
}
