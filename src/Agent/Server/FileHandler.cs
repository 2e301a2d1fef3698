using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Google.Protobuf;
using Tmds.Linux;

namespace FireSharp.Agent.Server;

/// <summary>
/// ReadFile/WriteFile of small files (at most <see cref="AgentProtocol.MaxFileBytes"/>). Paths are
/// absolute. Writes go in place (open, truncate, write), so /proc and /sys files work too.
/// </summary>
internal static unsafe class FileHandler
{
    public static Response Read(ulong id, ReadFileRequest request)
    {
        if (CheckPath(request.Path) is { } bad) return Error(id, ErrorCode.InvalidArgument, bad);
        try
        {
            if (FileType(request.Path) is { } type && type != "regular file")
                return Error(id, ErrorCode.InvalidArgument, $"{request.Path} is a {type}, not a regular file");
            using var file = new FileStream(request.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
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
            return new Response { Id = id, ReadFile = new ReadFileReply { Data = UnsafeByteOperations.UnsafeWrap(buffer.AsMemory(0, total)) } };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return FromException(id, request.Path, e);
        }
    }

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
                Mode = FileMode.Create,
                Access = FileAccess.Write,
                Share = FileShare.ReadWrite,
                BufferSize = 0,
                UnixCreateMode = (UnixFileMode)(request.Mode == 0 ? 0b110_100_100 : request.Mode),
            };
            using (var file = new FileStream(request.Path, options))
                file.Write(request.Data.Span);
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
