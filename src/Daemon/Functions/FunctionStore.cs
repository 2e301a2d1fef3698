using System.Diagnostics;
using System.Globalization;
using FireSharp.Proto.V1;
using FireSharp.Kvm.Interop;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// Function records on disk, so that a restarted daemon keeps its functions:
/// <c>&lt;StateDir&gt;/functions/&lt;name&gt;/function.json</c> (the <see cref="Function"/> message in protobuf
/// JSON, written atomically) next to the code images packed from directories (<c>code-&lt;version&gt;.ext4</c>)
/// and the snapshots of the function's versions (<c>snapshots/</c>, written by the VM factory).
/// </summary>
public sealed partial class FunctionStore(string root, ILogger logger)
{
    private const string RecordFile = "function.json";

    /// <summary>Lambda's limit on unzipped code plus layers.</summary>
    public const long MaxCodeBytes = 250L * 1024 * 1024;

    public string Root { get; } = root;

    public string FunctionDir(string name) => Path.Combine(Root, name);

    /// <summary>Every readable record; a corrupt one is logged and skipped (left for a human).</summary>
    public IReadOnlyList<Function> LoadAll()
    {
        var list = new List<Function>();
        if (!Directory.Exists(Root)) return list;
        foreach (var dir in Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
        {
            string path = Path.Combine(dir, RecordFile);
            if (!File.Exists(path)) continue;
            try
            {
                var f = JsonParser.Default.Parse<Function>(File.ReadAllText(path));
                if (f.Spec?.Name != Path.GetFileName(dir)) throw new InvalidDataException($"the record names '{f.Spec?.Name}'");
                list.Add(f);
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or IOException or InvalidDataException)
            {
                LogCorrupt(logger, path, e.Message);
            }
        }
        return list;
    }

    /// <summary>Writes the record (without its live statistics) atomically.</summary>
    public void Save(Function function)
    {
        var copy = function.Clone();
        copy.Stats = null;
        string dir = FunctionDir(copy.Spec.Name);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, RecordFile);
        try
        {
            AtomicFile.Replace(path, System.Text.Encoding.UTF8.GetBytes(JsonFormatter.Default.Format(copy)));
        }
        catch (IOException e)
        {
            LogPersistFailed(logger, path, e.Message);
        }
    }

    /// <summary>Removes the function's directory (record, packed code, snapshots).</summary>
    public void Delete(string name)
    {
        try
        {
            if (Directory.Exists(FunctionDir(name))) Directory.Delete(FunctionDir(name), recursive: true);
        }
        catch (IOException e)
        {
            LogPersistFailed(logger, FunctionDir(name), e.Message);
        }
    }

    /// <summary>Removes packed code images of the function other than <paramref name="keep"/>.</summary>
    public void DeletePackedCodeExcept(string name, string? keep)
    {
        string dir = FunctionDir(name);
        if (!Directory.Exists(dir)) return;
        foreach (var f in Directory.GetFiles(dir, "code-*.ext4"))
            if (f != keep) TryDelete(f);
    }

    /// <summary>
    /// Packs the code directory <paramref name="directory"/> into a new ext4 image with <c>mke2fs -d</c> (no root
    /// needed) and returns its path. <paramref name="source"/> is that directory as the path policy opened it: the
    /// tree is copied from it, entry by entry through fds (<see cref="CodeTree"/>), into a private staging directory
    /// in the state dir, and that copy is what mke2fs reads, so mke2fs never walks a client's directory by name.
    /// InvalidArgument (field) when the directory is over 250 MiB, holds something that is not packed (a FIFO, a
    /// device, a socket, a symlink leading out) or cannot be packed.
    /// </summary>
    public async Task<string> PackCodeAsync(string name, string version, SafeFileHandle source, string directory, string field, CancellationToken ct)
    {
        string dir = FunctionDir(name);
        Directory.CreateDirectory(dir);
        string image = Path.Combine(dir, $"code-{version}.ext4"), tmp = image + ".tmp", staging = Path.Combine(dir, $".code-{version}.src");
        RemoveStaging(staging);
        if (!FileSystem.TryCreateDirectory(staging, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute))
            throw new IOException($"{staging} already exists");
        try
        {
            var tree = new CodeTree(field, directory, MaxCodeBytes);
            try
            {
                tree.CopyTo(source, staging);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JailSetupException) // (JailSetupException: lchown of the copy)
            {
                throw VmApiException.Invalid(field, $"'{directory}' cannot be read: {e.Message}");
            }
            await PackStagingAsync(staging, tmp, tree.Bytes, tree.Entries, directory, field, ct).ConfigureAwait(false);
        }
        finally
        {
            RemoveStaging(staging);
        }
        File.Move(tmp, image, overwrite: true);
        return image;
    }

    private static async Task PackStagingAsync(string staging, string tmp, long bytes, int entries, string directory, string field, CancellationToken ct)
    {
        // Room for the files, their metadata and the journal-less ext4's own structures.
        long sizeKib = Math.Max(4096, (bytes * 5 / 4 + entries * 8192L) / 1024 + 2048);
        TryDelete(tmp);
        var psi = new ProcessStartInfo("mke2fs")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in (string[])["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "task", "-E", "root_owner=0:0", "-d", staging, tmp, sizeKib.ToString(CultureInfo.InvariantCulture) + "k"])
            psi.ArgumentList.Add(a);
        string stderr;
        int exit;
        try
        {
            using var p = Process.Start(psi) ?? throw new IOException("mke2fs did not start");
            var err = p.StandardError.ReadToEndAsync(ct);
            var output = p.StandardOutput.ReadToEndAsync(ct);
            await p.WaitForExitAsync(ct).ConfigureAwait(false);
            stderr = (await err.ConfigureAwait(false)) + await output.ConfigureAwait(false);
            exit = p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw VmApiException.Unavailable($"cannot run mke2fs to pack {field} (e2fsprogs must be installed on the daemon's host): {e.Message}");
        }
        if (exit != 0)
        {
            TryDelete(tmp);
            throw VmApiException.Invalid(field, $"mke2fs could not pack '{directory}' (exit {exit}): {stderr.Trim()}");
        }
    }

    /// <summary>Removes a staging copy (its directories made writable first: a copied 0555 directory would not empty otherwise).</summary>
    private static void RemoveStaging(string staging)
    {
        if (!Directory.Exists(staging) || OperatingSystem.IsWindows()) return;
        try
        {
            foreach (var d in Directory.EnumerateDirectories(staging, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint }).Prepend(staging))
                File.SetUnixFileMode(d, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.Delete(staging, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
    }

    [LoggerMessage(300, LogLevel.Warning, "function record {Path} is unreadable ({Error}); skipped")]
    private static partial void LogCorrupt(ILogger logger, string path, string error);

    [LoggerMessage(301, LogLevel.Error, "cannot write {Path}: {Error}")]
    private static partial void LogPersistFailed(ILogger logger, string path, string error);
}
