using System.Globalization;
using System.Text;
using FireSharp.Daemon.Workers;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Logs;

/// <summary>
/// A VM's console output on disk: <c>console.log</c> in the VM's directory, and, once it would pass the cap,
/// <c>console.log.1</c> (the previous one; older output is gone). Written by the daemon from the worker's console
/// stream (<see cref="RecordAsync"/>), so it survives the worker, a worker restart appends to it, and a jailed worker
/// needs no writable path for it. It goes when the VM is deleted, with the VM's directory.
/// </summary>
public sealed class ConsoleFile : IDisposable
{
    public const string FileName = "console.log";

    private readonly string _path;
    private readonly long _max;
    private FileStream _stream;

    /// <param name="maxBytes">The cap of each of the two files (at least 1).</param>
    public ConsoleFile(string path, long maxBytes)
    {
        _path = path;
        _max = Math.Max(1, maxBytes);
        _stream = Open(path);
    }

    private static FileStream Open(string path) =>
        new(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 1);

    /// <summary>Appends output (flushed, so readers see it at once), first rotating when the file would pass the cap.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        if (data.Length > _max) data = data[^(int)_max..];
        if (_stream.Length + data.Length > _max && _stream.Length > 0)
        {
            _stream.Dispose();
            File.Move(_path, _path + ".1", overwrite: true);
            _stream = Open(_path);
        }
        _stream.Write(data);
        _stream.Flush();
    }

    public void Dispose() => _stream.Dispose();

    /// <summary>
    /// Copies the worker's console stream into the VM's console file until the stream ends (the guest or the worker
    /// ended) or <paramref name="ct"/> is cancelled. With <paramref name="replay"/> (a worker this daemon launched)
    /// it starts with the worker's history; an adopted worker's output from while no daemon ran is not in the file.
    /// Output the worker had to drop is marked in the file. Never throws.
    /// </summary>
    public static async Task RecordAsync(string vmId, WorkerClient client, string path, long maxBytes, bool replay, ILogger logger, CancellationToken ct)
    {
        try
        {
            await using var console = await client.AttachConsoleAsync(replay, ct).ConfigureAwait(false);
            using var file = new ConsoleFile(path, maxBytes);
            await foreach (var chunk in console.ReadAllAsync(ct).ConfigureAwait(false))
            {
                if (chunk.Dropped > 0)
                    file.Append(Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"\n[firesharp: {chunk.Dropped} bytes of console output lost here]\n")));
                file.Append(chunk.Data.Span);
            }
        }
        catch (OperationCanceledException) { }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or VmApiException or System.Net.Sockets.SocketException
                                      or InvalidDataException or Google.Protobuf.InvalidProtocolBufferException)
        {
            if (!ct.IsCancellationRequested) LogsLog.ConsoleFailed(logger, vmId, path, e.Message);
        }
    }
}
