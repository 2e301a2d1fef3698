using System.Buffers.Binary;
using System.Text;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// virtio-blk (virtio 1.x, "Block Device") over an <see cref="IBlockBackend"/>: IN, OUT, FLUSH and GET_ID on one
/// queue. A read-only drive offers VIRTIO_BLK_F_RO and fails every write with IOERR; FLUSH is acknowledged
/// only after the backend says the data is durable. Requests are checked against the capacity and the
/// buffers the guest named, and the status byte (the last device-writable byte) is written last.
/// A request the device cannot make sense of completes with IOERR, or UNSUPP for an unknown type.
/// </summary>
public sealed class VirtioBlock : IVirtioDevice, IStatefulDevice, IDisposable
{
    public const int FeatureSizeMax = 1, FeatureSegMax = 2, FeatureReadOnly = 5, FeatureBlkSize = 6, FeatureFlush = 9;
    public const uint RequestIn = 0, RequestOut = 1, RequestFlush = 4, RequestGetId = 8;
    public const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupported = 2;
    public const int HeaderBytes = 16;
    public const int IdBytes = 20;
    public const int SectorSize = 512;
    public const ushort DefaultQueueSize = 256;

    private const byte StateFormat = 1;

    private readonly IBlockBackend _backend;
    private readonly ILogger _logger;
    private readonly byte[] _id = new byte[IdBytes];
    private readonly byte[] _config = new byte[60];
    private int _ioErrorLogged, _badRequestLogged;
    private long _requests, _bytesRead, _bytesWritten, _flushes;

    /// <param name="backend">The storage; the device owns and disposes it.</param>
    /// <param name="id">Device id within the VM (logs, snapshot state ids).</param>
    /// <param name="serial">What GET_ID returns: up to 20 printable ASCII characters, NUL-padded.</param>
    public VirtioBlock(IBlockBackend backend, string id, string? serial = null, ILogger? logger = null, ushort queueSize = DefaultQueueSize)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(id);
        if (backend.SizeBytes % SectorSize != 0)
            throw new ArgumentException("backend size must be a multiple of 512", nameof(backend));
        CheckSerial(serial, "serial").CopyTo(_id, 0);
        _backend = backend;
        Id = "virtio-blk:" + id;
        Serial = serial ?? "";
        _logger = logger ?? NullLogger.Instance;
        MaxQueueSize = queueSize;
        CapacitySectors = backend.SizeBytes / SectorSize;

        BinaryPrimitives.WriteUInt64LittleEndian(_config, CapacitySectors);          // capacity
        BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(12), (uint)queueSize - 2); // seg_max: header and status need two descriptors
        BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(20), SectorSize);    // blk_size
        BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(34), 1);             // num_queues
    }

    /// <summary>Checks a GET_ID serial and returns its 20 NUL-padded bytes, or throws <see cref="VirtioConfigException"/>.</summary>
    public static byte[] CheckSerial(string? serial, string field)
    {
        var bytes = new byte[IdBytes];
        if (string.IsNullOrEmpty(serial)) return bytes;
        if (serial.Length > IdBytes || serial.Any(c => c is < ' ' or > '~'))
            throw new VirtioConfigException(field, VirtioConfigError.InvalidSerial,
                $"drive serial \"{serial}\" must be at most {IdBytes} printable ASCII characters");
        Encoding.ASCII.GetBytes(serial, bytes);
        return bytes;
    }

    public VirtioDeviceType DeviceType => VirtioDeviceType.Block;
    public string Id { get; }
    public string StateId => Id;
    public string Serial { get; }
    public int QueueCount => 1;
    public ushort MaxQueueSize { get; }
    public ulong CapacitySectors { get; }
    public bool ReadOnly => _backend.IsReadOnly;
    public IBlockBackend Backend => _backend;

    public ulong DeviceFeatures =>
        (1UL << FeatureSegMax) | (1UL << FeatureBlkSize) | (1UL << FeatureFlush) | (ReadOnly ? 1UL << FeatureReadOnly : 0);

    /// <summary>Requests completed, bytes read from and written to the backend, flushes done.</summary>
    public (long Requests, long BytesRead, long BytesWritten, long Flushes) Counters =>
        (Interlocked.Read(ref _requests), Interlocked.Read(ref _bytesRead), Interlocked.Read(ref _bytesWritten), Interlocked.Read(ref _flushes));

    public void ReadConfig(uint offset, Span<byte> data)
    {
        data.Clear();
        if (offset >= _config.Length) return;
        int n = (int)Math.Min((uint)data.Length, (uint)_config.Length - offset);
        _config.AsSpan((int)offset, n).CopyTo(data);
    }

    /// <summary>Nothing in this config space is writable (no VIRTIO_BLK_F_CONFIG_WCE).</summary>
    public void WriteConfig(uint offset, ReadOnlySpan<byte> data) { }

    public void Activate(ulong negotiatedFeatures) { }

    public void Reset() { }

    public void ProcessQueue(VirtqueueContext queue)
    {
        while (queue.TryNext(out var chain))
            queue.Complete(HandleRequest(queue.Memory, chain));
    }

    /// <summary>Runs one request and returns the number of bytes written into the chain's writable part.</summary>
    public uint HandleRequest(GuestMemory memory, in DescriptorChain chain)
    {
        Interlocked.Increment(ref _requests);
        if (chain.WritableLength == 0)
        {
            // Nowhere to put a status: nothing to do but give the buffer back.
            BadRequest("no device-writable byte for the status");
            return 0;
        }
        ulong statusOffset = chain.WritableLength - 1;
        uint written = 1;
        byte status;
        Span<byte> header = stackalloc byte[HeaderBytes];
        if (chain.CopyFromReadable(memory, 0, header) < HeaderBytes)
        {
            BadRequest($"request header is {chain.ReadableLength} bytes, not {HeaderBytes}");
            status = StatusIoErr;
        }
        else
        {
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
            switch (type)
            {
                case RequestIn:
                    status = Transfer(memory, chain, sector, write: false, length: statusOffset);
                    if (status == StatusOk) written = (uint)Math.Min(statusOffset + 1, uint.MaxValue);
                    break;
                case RequestOut:
                    status = Transfer(memory, chain, sector, write: true, length: chain.ReadableLength - HeaderBytes);
                    break;
                case RequestFlush:
                    status = Flush();
                    break;
                case RequestGetId:
                    int n = (int)Math.Min(statusOffset, IdBytes);
                    chain.CopyToWritable(memory, 0, _id.AsSpan(0, n));
                    written = (uint)n + 1;
                    status = StatusOk;
                    break;
                default:
                    status = StatusUnsupported;
                    break;
            }
        }
        // Last: once the status is there the driver may consider the request done.
        chain.CopyToWritable(memory, statusOffset, [status]);
        return written;
    }

    private byte Transfer(GuestMemory memory, in DescriptorChain chain, ulong sector, bool write, ulong length)
    {
        if (write && ReadOnly) return StatusIoErr; // VIRTIO_BLK_F_RO: fail, and write nothing
        if (length % SectorSize != 0)
        {
            BadRequest($"{(write ? "write" : "read")} of {length} bytes is not a multiple of {SectorSize}");
            return StatusIoErr;
        }
        if (sector > CapacitySectors || length / SectorSize > CapacitySectors - sector)
        {
            BadRequest($"{(write ? "write" : "read")} of {length / SectorSize} sectors at sector {sector} is beyond the capacity of {CapacitySectors}");
            return StatusIoErr;
        }
        ulong offset = sector * SectorSize, done = 0;
        try
        {
            // Straight between the file and the guest's own buffers: no copy in between.
            foreach (var r in chain.Ranges(writable: !write, offset: write ? HeaderBytes : 0UL, length))
            {
                var span = memory.GetSpan(r.Address, r.Length);
                if (write) _backend.Write(offset + done, span);
                else _backend.Read(offset + done, span);
                done += (ulong)r.Length;
            }
        }
        catch (IOException e)
        {
            if (Interlocked.Exchange(ref _ioErrorLogged, 1) == 0)
                VirtioLog.HostIoError(_logger, Id, write ? "write" : "read", offset + done, e.Message);
            return StatusIoErr;
        }
        Interlocked.Add(ref write ? ref _bytesWritten : ref _bytesRead, (long)done);
        return StatusOk;
    }

    private byte Flush()
    {
        try
        {
            _backend.Flush();
        }
        catch (IOException e)
        {
            if (Interlocked.Exchange(ref _ioErrorLogged, 1) == 0)
                VirtioLog.HostIoError(_logger, Id, "flush", 0, e.Message);
            return StatusIoErr;
        }
        Interlocked.Increment(ref _flushes);
        return StatusOk;
    }

    private void BadRequest(string reason)
    {
        if (Interlocked.Exchange(ref _badRequestLogged, 1) == 0) VirtioLog.BadRequest(_logger, Id, reason);
    }

    /// <summary>What identifies the disk; restoring onto a different disk (size, mode, serial) is refused.</summary>
    public byte[] SaveState()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(StateFormat);
            w.Write(CapacitySectors);
            w.Write(ReadOnly);
            w.Write(Serial);
        }
        return ms.ToArray();
    }

    public void RestoreState(ReadOnlySpan<byte> state)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(state.ToArray()));
            if (r.ReadByte() != StateFormat) throw new InvalidDataException($"{Id}: unknown state format");
            ulong capacity = r.ReadUInt64();
            bool readOnly = r.ReadBoolean();
            string serial = r.ReadString();
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException($"{Id}: trailing bytes in state");
            if (capacity != CapacitySectors || readOnly != ReadOnly || serial != Serial)
                throw new InvalidDataException($"{Id}: the snapshot was taken with a different disk ({capacity} sectors, read-only {readOnly}, serial \"{serial}\")");
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{Id}: state is truncated", e);
        }
    }

    /// <summary>Logs the counters and closes the backend.</summary>
    public void Dispose()
    {
        var (requests, read, written, flushes) = Counters;
        VirtioLog.BlockCounters(_logger, Id, requests, read, written, flushes);
        _backend.Dispose();
    }
}
