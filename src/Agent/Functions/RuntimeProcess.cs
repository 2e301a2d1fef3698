using System.Buffers;
using System.Net.Sockets;
using FireSharp.Agent.Processes;
using Tmds.Linux;

namespace FireSharp.Agent.Functions;

/// <summary>
/// A process of a function (its runtime, or an extension) whose stdout and stderr are read all
/// the time into the function's <see cref="LogTail"/>, so a chatty process never blocks on a full
/// pipe and the agent keeps only the tail.
/// </summary>
internal sealed class RuntimeProcess : IDisposable
{
    private const int ChunkBytes = 16 << 10;
    private readonly SpawnedProcess _process;
    private readonly LogTail _tail;
    private readonly Task _pumps;
    private volatile bool _killedByAgent;

    public RuntimeProcess(string name, SpawnedProcess process, LogTail tail)
    {
        Name = name;
        _process = process;
        _tail = tail;
        try { process.Stdin.Shutdown(SocketShutdown.Send); } // stdin at EOF, like /dev/null
        catch (SocketException) { }
        _pumps = Task.WhenAll(PumpAsync(process.Stdout), PumpAsync(process.Stderr));
    }

    public string Name { get; }
    public int Pid => _process.Pid;
    public Task<ExitStatus> Exited => _process.Exited;
    public bool HasExited => _process.Exited.IsCompleted;

    /// <summary>True once the agent itself sent SIGKILL (so a SIGKILL death is not the OOM killer's).</summary>
    public bool KilledByAgent => _killedByAgent;

    /// <summary>Sends <paramref name="signal"/> to the process's group (it leads its own session).</summary>
    public void Signal(int signal)
    {
        if (signal == LibC.SIGKILL) _killedByAgent = true;
        if (!HasExited) _process.KillGroup(signal);
    }

    /// <summary>SIGKILL to the group, and waits (up to <paramref name="within"/>) for the exit.</summary>
    public async Task<bool> KillAsync(TimeSpan within)
    {
        // Even after the leader exited, its group may live on (background children).
        _killedByAgent = true;
        _process.KillGroup(LibC.SIGKILL);
        return await WaitExitAsync(within).ConfigureAwait(false);
    }

    public async Task<bool> WaitExitAsync(TimeSpan within)
    {
        if (HasExited) return true;
        await Task.WhenAny(Exited, Task.Delay(within)).ConfigureAwait(false);
        return HasExited;
    }

    /// <summary>
    /// Waits (briefly) until the output the process wrote so far has been read into the tail:
    /// until neither stream has unread bytes.
    /// </summary>
    public async Task DrainAsync(TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (Unread(_process.Stdout) + Unread(_process.Stderr) > 0 && DateTime.UtcNow < deadline)
            await Task.Delay(2).ConfigureAwait(false);
        await Task.Yield();
    }

    private static int Unread(Socket s)
    {
        try { return s.Available; }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { return 0; }
    }

    /// <summary>
    /// Peak resident memory (VmHWM) of the runtime process, in KiB. Only the process itself: a scan
    /// of /proc for the rest of its session costs too much per invocation in a guest on PVM.
    /// </summary>
    public ulong MemoryKib() => ReadStatusKib(_process.Pid, "VmHWM:");

    private static ulong ReadStatusKib(int pid, string key)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
                var number = line[key.Length..].Trim().Split(' ')[0];
                return ulong.TryParse(number, out var kib) ? kib : 0;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return 0;
    }

    private async Task PumpAsync(Socket source)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ChunkBytes);
        try
        {
            while (true)
            {
                int n = await source.ReceiveAsync(buffer.AsMemory(0, ChunkBytes), SocketFlags.None).ConfigureAwait(false);
                if (n <= 0) break;
                _tail.Append(buffer.AsSpan(0, n));
                if (FireSharp.Agent.Log.Verbose) FireSharp.Agent.Log.Debug($"{Name}: {System.Text.Encoding.UTF8.GetString(buffer, 0, n).TrimEnd()}");
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public void Dispose()
    {
        // The pumps end when the sockets close; a background child may hold them open, so close them.
        _process.Dispose();
        _ = _pumps;
    }
}
