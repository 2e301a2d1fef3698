using System.Threading.Channels;
using FireSharp.Devices.Legacy;

namespace FireSharp.Worker;

/// <summary>
/// The worker's console sink: keeps the last <see cref="Capacity"/> bytes of guest output (for a client
/// that attaches later) and copies new output to each attached reader. Never blocks the vCPU: a reader
/// that falls more than <see cref="ReaderBacklog"/> chunks behind loses output, counted as dropped.
/// </summary>
public sealed class ConsoleLog : ISerialSink
{
    public const int Capacity = 256 * 1024;
    public const int ReaderBacklog = 1024;

    private readonly Lock _gate = new();
    private readonly byte[] _ring = new byte[Capacity];
    private long _written; // total bytes ever written; the ring holds the last min(_written, Capacity)
    private readonly List<Reader> _readers = [];

    /// <summary>Total bytes the guest has written.</summary>
    private bool _ended;

    public long TotalBytes { get { lock (_gate) return _written; } }

    public void Write(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        lock (_gate)
        {
            var tail = data.Length > Capacity ? data[^Capacity..] : data;
            int pos = (int)(_written % Capacity);
            int first = Math.Min(tail.Length, Capacity - pos);
            tail[..first].CopyTo(_ring.AsSpan(pos));
            tail[first..].CopyTo(_ring);
            _written += data.Length;
            if (_readers.Count == 0) return;
            var chunk = data.ToArray();
            foreach (var r in _readers) r.Offer(chunk);
        }
    }

    /// <summary>Attaches a reader; with <paramref name="replay"/> it first gets the retained output.</summary>
    public Reader Attach(bool replay)
    {
        lock (_gate)
        {
            var reader = new Reader(this);
            if (replay && _written > 0)
            {
                int kept = (int)Math.Min(_written, Capacity);
                var history = new byte[kept];
                int start = (int)((_written - kept) % Capacity);
                int first = Math.Min(kept, Capacity - start);
                _ring.AsSpan(start, first).CopyTo(history);
                _ring.AsSpan(0, kept - first).CopyTo(history.AsSpan(first));
                reader.Offer(history, dropped: _written - kept);
            }
            if (_ended) reader.Complete(); // the guest is gone: history only, then the stream ends
            else _readers.Add(reader);
            return reader;
        }
    }

    /// <summary>
    /// Ends every reader's stream: the guest has ended (no more output will come) or the worker is
    /// shutting down. Readers attached later get the history and then end too.
    /// </summary>
    public void CompleteAll()
    {
        lock (_gate)
        {
            _ended = true;
            foreach (var r in _readers) r.Complete();
            _readers.Clear();
        }
    }

    private void Detach(Reader reader)
    {
        lock (_gate) _readers.Remove(reader);
    }

    /// <summary>One attached client's view: chunks in order, with the count of bytes lost before each.</summary>
    public sealed class Reader : IDisposable
    {
        private readonly ConsoleLog _owner;
        private readonly Channel<(byte[] Data, long Dropped)> _channel =
            Channel.CreateBounded<(byte[], long)>(new BoundedChannelOptions(ReaderBacklog) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        private long _pendingDropped;

        internal Reader(ConsoleLog owner) => _owner = owner;

        internal void Offer(byte[] data, long dropped = 0)
        {
            long lost = Interlocked.Exchange(ref _pendingDropped, 0) + dropped;
            if (!_channel.Writer.TryWrite((data, lost)))
                Interlocked.Add(ref _pendingDropped, lost + data.Length);
        }

        internal void Complete() => _channel.Writer.TryComplete();

        public IAsyncEnumerable<(byte[] Data, long Dropped)> ReadAllAsync(CancellationToken ct) => _channel.Reader.ReadAllAsync(ct);

        public void Dispose()
        {
            _owner.Detach(this);
            _channel.Writer.TryComplete();
        }
    }
}
