using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Google.Protobuf;
using Tmds.Linux;

namespace FireSharp.Agent.Server;

/// <summary>
/// ReadFile/WriteFile: whole small files (at most <see cref="AgentProtocol.MaxFileBytes"/>), or files of any
/// size in chunks at offsets (ReadFileRequest.length, WriteFileRequest.offset). Paths are absolute. Writes go
/// in place (open, truncate, write), so /proc and /sys files work too.
/// </summary>
internal static unsafe class FileHandler
{
    public static Response Read(ulong id, ReadFileRequest request)
    {
        if (CheckPath(request.Path) is { } bad) return Error(id, ErrorCode.InvalidArgument, bad);
        if (request.Length > AgentProtocol.MaxFileBytes)
            return Error(id, ErrorCode.InvalidArgument, $"length {request.Length} exceeds the {AgentProtocol.MaxFileBytes}-byte limit of a ReadFile chunk");
        try
        {
            if (FileType(request.Path) is { } type && type != "regular file")
                return Error(id, ErrorCode.InvalidArgument, $"{request.Path} is a {type}, not a regular file");
            using var file = new FileStream(request.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            if (request.Length > 0) return ReadChunk(id, request, file);
            // The size of /proc files is 0, so read up to the limit (+1 to tell "too large").
            var buffer = new byte[Math.Min(AgentProtocol.MaxFileBytes + 1L, Math.Max(file.Length + 1, 4096))];
            int total = 0;
            while (true)
            {
                if (total == buffer.Length)
                {
                    if (buffer.Length > AgentProtocol.MaxFileBytes) break;
                    Array.Resize(ref buffer, (int)Math.Min(AgentProtocol.MaxFileBytes + 1L, buffer.Length * 2L));
                }
                int n = file.Read(buffer, total, buffer.Length - total);
                if (n == 0) break;
                total += n;
            }
            if (total > AgentProtocol.MaxFileBytes)
                return Error(id, ErrorCode.FileTooLarge, $"{request.Path} is larger than the {AgentProtocol.MaxFileBytes}-byte limit of ReadFile");
            return new Response { Id = id, ReadFile = Reply(request.Path, file, buffer.AsMemory(0, total), eof: true) };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return FromException(id, request.Path, e);
        }
    }

    /// <summary>Up to <c>length</c> bytes from <c>offset</c>; one byte more is asked for to tell whether the file ends.</summary>
    private static Response ReadChunk(ulong id, ReadFileRequest request, FileStream file)
    {
        if (request.Offset > 0) file.Seek(checked((long)request.Offset), SeekOrigin.Begin);
        var buffer = new byte[request.Length + 1];
        int total = 0, n;
        while (total < buffer.Length && (n = file.Read(buffer, total, buffer.Length - total)) > 0) total += n;
        bool eof = total <= (int)request.Length;
        return new Response { Id = id, ReadFile = Reply(request.Path, file, buffer.AsMemory(0, Math.Min(total, (int)request.Length)), eof) };
    }

    private static ReadFileReply Reply(string path, FileStream file, ReadOnlyMemory<byte> data, bool eof) => new()
    {
        Data = UnsafeByteOperations.UnsafeWrap(data),
        Eof = eof,
        Mode = (uint)File.GetUnixFileMode(path),
        Size = (ulong)file.Length,
    };

    public static Response Write(ulong id, WriteFileRequest request)
    {
        if (CheckPath(request.Path) is { } bad) return Error(id, ErrorCode.InvalidArgument, bad);
        if (request.Data.Length > AgentProtocol.MaxFileBytes)
            return Error(id, ErrorCode.FileTooLarge, $"{request.Data.Length} bytes exceed the {AgentProtocol.MaxFileBytes}-byte limit of WriteFile");
        if ((request.Mode & ~0xFFFu) != 0) return Error(id, ErrorCode.InvalidArgument, $"mode {Convert.ToString(request.Mode, 8)} has bits beyond 07777");
        try
        {
            // A FIFO or socket would block the connection in open(2).
            if (FileType(request.Path) is { } type && type is "directory" or "FIFO" or "socket")
                return Error(id, ErrorCode.InvalidArgument, $"{request.Path} is a {type}");
            if (request.CreateParents && Path.GetDirectoryName(request.Path) is { Length: > 0 } parent)
                Directory.CreateDirectory(parent);
            var options = new FileStreamOptions
            {
                // A later chunk goes into the file its first chunk created.
                Mode = request.Offset > 0 ? FileMode.Open : FileMode.Create,
                Access = FileAccess.Write,
                Share = FileShare.ReadWrite,
                BufferSize = 0,
            };
            // (Only a create may carry a mode: .NET refuses one with FileMode.Open.)
            if (request.Offset == 0) options.UnixCreateMode = (UnixFileMode)(request.Mode == 0 ? 0b110_100_100 : request.Mode);
            using (var file = new FileStream(request.Path, options))
            {
                if (request.Offset > 0) file.Seek(checked((long)request.Offset), SeekOrigin.Begin);
                file.Write(request.Data.Span);
            }
            if (request.SetMode) File.SetUnixFileMode(request.Path, (UnixFileMode)(request.Mode == 0 ? 0b110_100_100 : request.Mode));
            return new Response { Id = id, WriteFile = new WriteFileReply { BytesWritten = (ulong)request.Data.Length } };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return FromException(id, request.Path, e);
        }
    }

    private static string? CheckPath(string path) =>
        path.Length == 0 || path[0] != '/' ? $"path '{path}' must be absolute"
        : path.Contains('\0') ? "path contains a NUL character"
        : null;

    /// <summary>The kind of file at <paramref name="path"/> (following links), or null if none.</summary>
    private static string? FileType(string path)
    {
        byte* p = Native.AllocUtf8(path);
        try
        {
            stat st;
            if (LibC.stat(p, &st) != 0) return null;
            var mode = st.st_mode;
            return LibC.S_ISREG(mode) ? "regular file" : LibC.S_ISDIR(mode) ? "directory" : LibC.S_ISFIFO(mode) ? "FIFO"
                : LibC.S_ISSOCK(mode) ? "socket" : LibC.S_ISCHR(mode) ? "character device" : LibC.S_ISBLK(mode) ? "block device" : "special file";
        }
        finally
        {
            NativeMemory.Free(p);
        }
    }

    private static Response FromException(ulong id, string path, Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => Error(id, ErrorCode.NotFound, $"{path}: no such file or directory"),
        UnauthorizedAccessException => Error(id, ErrorCode.PermissionDenied, $"{path}: {e.Message}"),
        _ => Error(id, ErrorCode.IoError, $"{path}: {e.Message}"),
    };

    private static Response Error(ulong id, ErrorCode code, string message) =>
        new() { Id = id, Error = new Error { Code = code, Message = message } };
}
