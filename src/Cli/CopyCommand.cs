using System.CommandLine;
using System.Text.RegularExpressions;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp vm cp SRC DST</c>: copies one file into or out of a running VM through its guest agent (CopyIn and
/// CopyOut), streamed in pieces, so there is no size limit. One side is <c>VMID:/absolute/guest/path</c>, the other a
/// local path (<c>-</c> for stdin or stdout). As cp: a destination that is a directory (a local directory, or a guest
/// path ending in '/') gets the source's file name. Copying in keeps the local file's mode (or <c>--mode</c>);
/// copying out keeps the guest file's mode, and the local file appears only once complete (written beside it, then
/// renamed). Exit codes: 0 copied; 2 bad arguments; 4 a file or VM not found; others as <c>firesharp vm</c>.
/// </summary>
internal static partial class CopyCommand
{
    /// <summary>The bytes in each CopyIn message (the daemon writes the guest file in 1 MiB chunks).</summary>
    public const int PieceBytes = 256 << 10;

    /// <summary>A missing local file (<see cref="ExitCodes.NotFound"/>).</summary>
    public const int ExitNotFound = ExitCodes.NotFound;

    public static Command Create()
    {
        var src = new Argument<string>("src") { Description = "a local file (or - for stdin), or VMID:/path in the guest" };
        var dst = new Argument<string>("dst") { Description = "a local path (or - for stdout), or VMID:/path in the guest" };
        var mode = new Option<string?>("--mode") { Description = "the guest file's mode in octal when copying in (default: the local file's)" };
        var parents = new Option<bool>("--parents", "-p") { Description = "create missing guest directories when copying in" };
        var command = new Command("cp", "copy a file into or out of a running VM through its guest agent (VMID:/path on one side)") { src, dst, mode, parents };
        command.SetAction(async (parse, ct) =>
        {
            Endpoint from, to;
            uint? explicitMode;
            try
            {
                (from, to) = (Endpoint.Parse(parse.GetValue(src)!), Endpoint.Parse(parse.GetValue(dst)!));
                if (from.Vm is null == to.Vm is null)
                    throw new ArgumentException(from.Vm is null ? "vm cp: one side must be VMID:/path in the guest" : "vm cp: only one side may be in a guest");
                explicitMode = parse.GetValue(mode) is { } m ? ParseMode(m) : null;
            }
            catch (ArgumentException e)
            {
                return CliErrors.Report(Console.Error, ExitCodes.Usage, e.Message, "see 'firesharp vm cp --help'");
            }
            return await VmClientCommands.CallAsync(parse, async (client, options) =>
            {
                try
                {
                    if (from.Vm is null) await CopyInAsync(client, from.Path, to.Vm!, to.Path, explicitMode, parse.GetValue(parents), options.CancellationToken).ConfigureAwait(false);
                    else await CopyOutAsync(client, from.Vm, from.Path, to.Path, options.CancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException and not (FileNotFoundException or DirectoryNotFoundException) or UnauthorizedAccessException)
                {
                    // The copy itself failed (a full disk, a local file this user may not write, a broken stream): exit 1,
                    // not the usage error DaemonClient makes of other I/O exceptions. A missing local file stays 4.
                    throw new CliException(ExitCodes.Failed, e.Message);
                }
            }, ct, streaming: true).ConfigureAwait(false);
        });
        return command;
    }

    /// <summary>One side of a copy: a guest path of a VM, or a local path (Vm null).</summary>
    internal readonly record struct Endpoint(string? Vm, string Path)
    {
        public static Endpoint Parse(string text)
        {
            var m = GuestPath().Match(text);
            if (!m.Success) return new Endpoint(null, text.Length > 0 ? text : throw new ArgumentException("vm cp: an empty path"));
            string path = m.Groups[2].Value;
            if (path.Length == 0 || path[0] != '/') throw new ArgumentException($"vm cp: {text}: the guest path must be absolute (VMID:/path)");
            return new Endpoint(m.Groups[1].Value, path);
        }
    }

    // A VM id (as the daemon allows them), a colon, then the guest path. "./a:b" and "/x:y" stay local.
    [GeneratedRegex("^([a-z0-9][a-z0-9_.-]{0,62}):(.*)$")]
    private static partial Regex GuestPath();

    internal static uint ParseMode(string text)
    {
        try
        {
            uint mode = Convert.ToUInt32(text, 8);
            return mode <= 0xFFF ? mode : throw new ArgumentException($"--mode {text}: above 07777");
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ArgumentException($"--mode {text}: not an octal mode such as 0644", e);
        }
    }

    /// <summary>Copies a local file (or stdin for "-") to <paramref name="guestPath"/> in VM <paramref name="vm"/>; returns its size.</summary>
    internal static async Task<long> CopyInAsync(VmService.VmServiceClient client, string local, string vm, string guestPath, uint? mode, bool parents, CancellationToken ct)
    {
        Stream input;
        if (local == "-")
        {
            input = Console.OpenStandardInput();
            if (guestPath.EndsWith('/')) throw new ArgumentException("vm cp: copying stdin needs a guest file name, not a directory");
        }
        else
        {
            if (Directory.Exists(local)) throw new ArgumentException($"vm cp: {local} is a directory (only files are copied)");
            if (!File.Exists(local)) throw new FileNotFoundException($"{local}: no such file");
            input = new FileStream(local, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            mode ??= OperatingSystem.IsWindows() ? 0 : (uint)File.GetUnixFileMode(local);
            if (guestPath.EndsWith('/')) guestPath += Path.GetFileName(local);
        }
        await using (input.ConfigureAwait(false))
        {
            using var call = client.CopyIn(cancellationToken: ct);
            var message = new CopyInRequest { Id = vm, Path = guestPath, Mode = mode ?? 0, CreateParents = parents };
            var buffer = new byte[PieceBytes];
            while (true)
            {
                // The first message goes even for an empty file: it names the VM and the path.
                int n = await ReadFullAsync(input, buffer, ct).ConfigureAwait(false);
                message.Data = ByteString.CopyFrom(buffer, 0, n);
                try
                {
                    await call.RequestStream.WriteAsync(message, ct).ConfigureAwait(false);
                }
                catch (Exception e) when (e is RpcException or InvalidOperationException)
                {
                    break; // the daemon ended the call (an error): its status comes with the response
                }
                if (n < buffer.Length) break; // the end of the input
                message = new CopyInRequest();
            }
            try { await call.RequestStream.CompleteAsync().ConfigureAwait(false); }
            catch (Exception e) when (e is RpcException or InvalidOperationException) { }
            return (long)(await call.ResponseAsync.ConfigureAwait(false)).BytesWritten;
        }
    }

    /// <summary>
    /// Copies <paramref name="guestPath"/> of VM <paramref name="vm"/> to a local file (into a directory under its
    /// own name, or to stdout for "-"); returns its size.
    /// </summary>
    internal static async Task<long> CopyOutAsync(VmService.VmServiceClient client, string vm, string guestPath, string local, CancellationToken ct)
    {
        if (guestPath.EndsWith('/')) throw new ArgumentException($"vm cp: {vm}:{guestPath} is a directory (only files are copied)");
        bool stdout = local == "-";
        if (!stdout && (Directory.Exists(local) || local.EndsWith('/'))) local = Path.Combine(local, Path.GetFileName(guestPath));
        string temp = stdout ? "" : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(local))!, $".{Path.GetFileName(local)}.fscp-{Guid.NewGuid():N}");
        using var call = client.CopyOut(new CopyOutRequest { Id = vm, Path = guestPath }, cancellationToken: ct);
        // Nothing is created locally until the guest file is known to exist (the first chunk).
        if (!await call.ResponseStream.MoveNext(ct).ConfigureAwait(false)) throw new IOException($"{vm}:{guestPath}: the daemon sent nothing");
        // The guest names the mode: only the permission bits are kept (never setuid, setgid or sticky on the host).
        uint mode = call.ResponseStream.Current.Mode & 0x1FF;
        // A fresh random name, created exclusively: a planted file or symlink of that name is never written through.
        var create = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, BufferSize = 0 };
        if (!OperatingSystem.IsWindows()) create.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var output = stdout ? Console.OpenStandardOutput() : new FileStream(temp, create);
        bool done = false;
        long size = 0;
        try
        {
            await using (output.ConfigureAwait(false))
            {
                do
                {
                    var chunk = call.ResponseStream.Current;
                    // Chunks come in order, each where the last ended: the guest cannot make a sparse giant by its offsets.
                    if ((long)chunk.Offset != size) throw new IOException($"{vm}:{guestPath}: a chunk at offset {chunk.Offset} where {size} was expected");
                    await output.WriteAsync(chunk.Data.Memory, ct).ConfigureAwait(false);
                    size += chunk.Data.Length;
                }
                while (await call.ResponseStream.MoveNext(ct).ConfigureAwait(false));
                if (mode != 0 && output is FileStream file && !OperatingSystem.IsWindows()) File.SetUnixFileMode(file.SafeFileHandle, (UnixFileMode)mode);
            }
            if (!stdout) File.Move(temp, local, overwrite: true);
            done = true;
            return size;
        }
        finally
        {
            if (!done && !stdout) File.Delete(temp);
        }
    }

    private static async Task<int> ReadFullAsync(Stream input, byte[] buffer, CancellationToken ct)
    {
        int total = 0, n;
        while (total < buffer.Length && (n = await input.ReadAsync(buffer.AsMemory(total), ct).ConfigureAwait(false)) > 0) total += n;
        return total;
    }
}
