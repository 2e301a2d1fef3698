using System.Runtime.CompilerServices;
using System.Text;
using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon.Logs;

/// <summary>Which of a VM's kept logs.</summary>
public enum VmLogKind
{
    /// <summary>The guest's console output (<c>console.log</c>).</summary>
    Console,
    /// <summary>The VMM's log: the worker's <c>worker.log</c>, rendered one event a line (<see cref="WorkerLogLine.Render"/>).</summary>
    Vmm,
}

/// <summary>A piece of a VM's log: console bytes, or whole rendered VMM lines.</summary>
public readonly record struct VmLogPiece(VmLogKind Kind, ReadOnlyMemory<byte> Data);

/// <summary>
/// Reads a VM's kept logs from its directory: the rotated file and the current one, the last <c>tailBytes</c> of
/// them, then, when following, what is appended, polled a few times a second. The console file is rotated by rename
/// (a follower drains the old file through its handle, then opens the new one); worker.log by copy and truncation (a
/// follower starts again at 0).
/// </summary>
public static class VmLogReader
{
    public const int ChunkBytes = 64 * 1024;

    /// <summary>The most a first read returns (both files together; <c>--tail</c> asks for less).</summary>
    public const long MaxInitialBytes = 32 << 20;

    /// <summary>The most one poll of a followed file reads; the rest comes on the next poll.</summary>
    public const int MaxPollBytes = 1 << 20;
    internal static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);

    public static async IAsyncEnumerable<VmLogPiece> ReadAsync(string dir, bool console, bool vmm, bool follow, long tailBytes,
        [EnumeratorCancellation] CancellationToken ct)
    {
        var tails = new List<Tail>();
        try
        {
            if (vmm) tails.Add(new Tail(VmLogKind.Vmm, Path.Combine(dir, WorkerLogRelay.FileName)));
            if (console) tails.Add(new Tail(VmLogKind.Console, Path.Combine(dir, ConsoleFile.FileName)));
            foreach (var t in tails)
                foreach (var piece in t.Initial(tailBytes))
                    yield return piece;
            while (follow && !ct.IsCancellationRequested)
            {
                try { await Task.Delay(PollInterval, ct).ConfigureAwait(false); }
                catch (OperationCanceledException) { yield break; }
                foreach (var t in tails)
                    foreach (var piece in t.Poll())
                        yield return piece;
            }
        }
        finally
        {
            foreach (var t in tails) t.Dispose();
        }
    }

    /// <summary>One log file being read: its open handle and how far it was read.</summary>
    private sealed class Tail(VmLogKind kind, string path) : IDisposable
    {
        private FileStream? _file;
        private long _offset;
        private readonly List<byte> _partial = []; // a VMM line not yet ended

        public List<VmLogPiece> Initial(long tailBytes)
        {
            // At most the tail asked for (or MaxInitialBytes) is read: the files are capped, but a worker owns its
            // log's fd and could have made it a sparse giant.
            long budget = tailBytes > 0 ? Math.Min(tailBytes, MaxInitialBytes) : MaxInitialBytes;
            var kept = new MemoryStream();
            _file = TryOpen(path);
            long current = _file?.Length ?? 0;
            AppendFile(kept, path + ".1", Math.Max(0, budget - current));
            if (_file is not null)
            {
                _file.Position = current - Math.Min(current, budget);
                CopyAtMost(_file, kept, current - _file.Position);
                _offset = _file.Position;
            }
            var data = kept.GetBuffer().AsMemory(0, (int)kept.Length);
            if (tailBytes > 0 && data.Length > tailBytes)
            {
                data = data[^(int)tailBytes..];
                if (kind == VmLogKind.Vmm) data = data[(data.Span.IndexOf((byte)'\n') + 1)..]; // whole lines only
            }
            return Emit(data);
        }

        public List<VmLogPiece> Poll()
        {
            var pieces = new List<VmLogPiece>();
            if (_file is null)
            {
                _file = TryOpen(path);
                _offset = 0;
                if (_file is null) return pieces;
            }
            pieces.AddRange(ReadNew());
            // Rotated by rename (console.log): the old file is drained above; go on with the new one from its start.
            var fresh = TryOpen(path);
            if (fresh is not null && !SameFile(fresh, _file))
            {
                _file.Dispose();
                _file = fresh;
                _offset = 0;
                pieces.AddRange(ReadNew());
            }
            else
            {
                fresh?.Dispose();
            }
            return pieces;
        }

        private List<VmLogPiece> ReadNew()
        {
            long length = _file!.Length;
            if (length < _offset) _offset = 0; // truncated (worker.log's rotation)
            if (length == _offset) return [];
            _file.Position = _offset;
            var data = new byte[Math.Min(length - _offset, MaxPollBytes)]; // the rest on the next poll
            int n = _file.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
            _offset += n;
            return Emit(data.AsMemory(0, n));
        }

        private List<VmLogPiece> Emit(ReadOnlyMemory<byte> data)
        {
            var pieces = new List<VmLogPiece>();
            if (kind == VmLogKind.Console)
            {
                for (int off = 0; off < data.Length; off += ChunkBytes)
                    pieces.Add(new VmLogPiece(kind, data.Slice(off, Math.Min(ChunkBytes, data.Length - off)).ToArray()));
                return pieces;
            }
            var text = new StringBuilder();
            foreach (byte b in data.Span)
            {
                if (b != (byte)'\n' && _partial.Count < WorkerLogRelay.MaxLineBytes) { _partial.Add(b); continue; }
                string line = Encoding.UTF8.GetString([.. _partial]).TrimEnd('\r');
                _partial.Clear();
                if (b != (byte)'\n') _partial.Add(b); // a line over MaxLineBytes is cut: this byte starts the next piece
                if (line.Length == 0) continue;
                text.Append(WorkerLogLine.Parse(line).Render()).Append('\n');
                if (text.Length >= ChunkBytes)
                {
                    pieces.Add(new VmLogPiece(kind, Encoding.UTF8.GetBytes(text.ToString())));
                    text.Clear();
                }
            }
            if (text.Length > 0) pieces.Add(new VmLogPiece(kind, Encoding.UTF8.GetBytes(text.ToString())));
            return pieces;
        }

        private static void AppendFile(MemoryStream into, string file, long atMost)
        {
            using var f = TryOpen(file);
            if (f is null || atMost <= 0) return;
            f.Position = Math.Max(0, f.Length - atMost);
            CopyAtMost(f, into, atMost);
        }

        private static void CopyAtMost(FileStream from, Stream to, long count)
        {
            var buffer = new byte[ChunkBytes];
            while (count > 0)
            {
                int n = from.Read(buffer, 0, (int)Math.Min(buffer.Length, count));
                if (n == 0) break;
                to.Write(buffer, 0, n);
                count -= n;
            }
        }

        private static FileStream? TryOpen(string file)
        {
            try { return new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1); }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException) { return null; }
        }

        private static bool SameFile(FileStream a, FileStream b)
        {
            try
            {
                var x = PathOpen.Status(a.SafeFileHandle);
                var y = PathOpen.Status(b.SafeFileHandle);
                return x.Device == y.Device && x.Inode == y.Inode;
            }
            catch (IOException) { return true; }
        }

        public void Dispose() => _file?.Dispose();
    }
}
