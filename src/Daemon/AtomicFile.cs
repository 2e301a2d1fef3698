namespace FireSharp.Daemon;

/// <summary>
/// Replaces a small file (a VM or function record) so that a crash leaves either the old contents or the new,
/// never a torn or empty file: the new contents go to <c>PATH.tmp</c>, which is fsynced, then renamed over PATH.
/// </summary>
internal static class AtomicFile
{
    public static void Replace(string path, ReadOnlySpan<byte> contents)
    {
        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
        {
            stream.Write(contents);
            stream.Flush(flushToDisk: true); // fsync: the data is on disk before the rename can be
        }
        File.Move(temp, path, overwrite: true);
    }
}
