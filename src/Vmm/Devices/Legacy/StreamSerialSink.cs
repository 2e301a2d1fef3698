namespace FireSharp.Devices.Legacy;

/// <summary>
/// A sink that writes to a <see cref="Stream"/> (stdout, a file, a pipe) from its own background
/// thread, so a slow or stuck consumer never blocks the vCPU.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Write"/> copies into a bounded buffer of <c>capacity</c> bytes and wakes the pump
/// thread; the pump writes whatever has accumulated and flushes the stream after every batch, so
/// output shows up promptly (no line buffering). When the buffer is full the newest bytes are
/// dropped and counted in <see cref="DroppedBytes"/>. If the stream throws, the sink stops writing
/// and counts everything after that as dropped; <see cref="Fault"/> holds the exception.
/// </para>
/// <para>Thread-safe. <see cref="Dispose"/> drains what is buffered (bounded wait) and then closes
/// the stream if the sink owns it.</para>
/// </remarks>
public sealed class StreamSerialSink : ISerialSink, IDisposable
{
    /// <summary>Default bound on bytes waiting for the pump thread.</summary>
    public const int DefaultCapacity = 64 * 1024;

    private static readonly TimeSpan DisposeDrainTimeout = TimeSpan.FromSeconds(2);

    private readonly object _gate = new();
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly Thread _pump;
    private byte[] _pending;      // filled by Write, under _gate
    private byte[] _writing;      // owned by the pump while a batch is in flight
    private int _pendingLength;
    private bool _inFlight;
    private bool _stopping;
    private long _dropped;
    private Exception? _fault;

    /// <param name="stream">The destination; must be writable.</param>
    /// <param name="ownsStream">Dispose <paramref name="stream"/> when this sink is disposed.</param>
    /// <param name="capacity">Bound, in bytes, on output waiting to be written.</param>
    public StreamSerialSink(Stream stream, bool ownsStream = true, int capacity = DefaultCapacity)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        if (!stream.CanWrite)
        {
            throw new ArgumentException("The stream is not writable.", nameof(stream));
        }

        _stream = stream;
        _ownsStream = ownsStream;
        _pending = new byte[capacity];
        _writing = new byte[capacity];
        _pump = new Thread(Pump) { IsBackground = true, Name = "serial-sink" };
        _pump.Start();
    }

    /// <summary>A sink on the process's standard output (not closed on dispose).</summary>
    public static StreamSerialSink ForStandardOutput(int capacity = DefaultCapacity) =>
        new(Console.OpenStandardOutput(), ownsStream: false, capacity);

    /// <summary>A sink on a file, created or truncated (or appended to, with <paramref name="append"/>).</summary>
    public static StreamSerialSink ForFile(string path, bool append = false, int capacity = DefaultCapacity)
    {
        var stream = new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write,
            FileShare.Read, bufferSize: 0);
        return new StreamSerialSink(stream, ownsStream: true, capacity);
    }

    /// <summary>Bytes discarded because the buffer was full, the stream failed, or the sink was disposed.</summary>
    public long DroppedBytes
    {
        get { lock (_gate) { return _dropped; } }
    }

    /// <summary>The exception that stopped the pump, if the stream failed.</summary>
    public Exception? Fault
    {
        get { lock (_gate) { return _fault; } }
    }

    public void Write(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return;
        }

        lock (_gate)
        {
            if (_stopping || _fault is not null)
            {
                _dropped += data.Length;
                return;
            }

            int room = _pending.Length - _pendingLength;
            int take = Math.Min(room, data.Length);
            data[..take].CopyTo(_pending.AsSpan(_pendingLength));
            _pendingLength += take;
            _dropped += data.Length - take;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Waits until everything written so far has reached the stream. Returns false on timeout or
    /// if the stream failed.
    /// </summary>
    public bool Flush(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_gate)
        {
            while ((_pendingLength > 0 || _inFlight) && _fault is null)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    return false;
                }

                Monitor.Wait(_gate, left);
            }

            return _fault is null;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping)
            {
                return;
            }

            _stopping = true;
            Monitor.PulseAll(_gate);
        }

        // The pump drains what is pending, then exits. If the stream is stuck we give up waiting;
        // the pump is a background thread and will not keep the process alive.
        _pump.Join(DisposeDrainTimeout);
        if (_ownsStream)
        {
            try
            {
                _stream.Dispose();
            }
            catch (IOException)
            {
            }
        }
    }

    private void Pump()
    {
        while (true)
        {
            int length;
            lock (_gate)
            {
                while (_pendingLength == 0 && !_stopping)
                {
                    Monitor.Wait(_gate);
                }

                if (_pendingLength == 0)
                {
                    return; // stopping and drained
                }

                (_pending, _writing) = (_writing, _pending);
                length = _pendingLength;
                _pendingLength = 0;
                _inFlight = true;
            }

            Exception? fault = null;
            try
            {
                _stream.Write(_writing, 0, length);
                _stream.Flush();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException
                                          or UnauthorizedAccessException)
            {
                fault = e;
            }

            lock (_gate)
            {
                _inFlight = false;
                if (fault is not null)
                {
                    _fault = fault;
                    _dropped += length + _pendingLength;
                    _pendingLength = 0;
                }

                Monitor.PulseAll(_gate);
                if (fault is not null)
                {
                    return;
                }
            }
        }
    }
}
