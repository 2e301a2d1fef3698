using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using Tmds.Linux;

namespace FireSharp.Agent.Processes;

/// <summary>How a child ended: an exit code, or the signal that killed it.</summary>
internal readonly record struct ExitStatus(int? ExitCode, int? Signal, bool CoreDumped)
{
    /// <summary>Decodes a waitpid status (WIFEXITED / WIFSIGNALED).</summary>
    public static ExitStatus FromWaitStatus(int status)
    {
        int termSig = status & 0x7f;
        if (termSig == 0) return new ExitStatus((status >> 8) & 0xff, null, false);
        return new ExitStatus(null, termSig, (status & 0x80) != 0);
    }

    public override string ToString() => ExitCode is { } code ? $"exit {code}" : $"signal {Signal}{(CoreDumped ? " (core dumped)" : "")}";
}

/// <summary>
/// Reaps every child of the agent with <c>waitpid(-1)</c> on one thread. As PID 1 (or as a child
/// subreaper) that includes orphans reparented to the agent, so no zombie is left behind. The
/// agent never uses System.Diagnostics.Process, so nothing else waits for its children.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001",
    Justification = "One per agent process, for its whole life: the reaper thread waits on _spawned until the process ends.")]
internal sealed class ChildReaper
{
    private readonly object _gate = new();
    private readonly Dictionary<int, TaskCompletionSource<ExitStatus>> _waiting = new();
    private readonly AutoResetEvent _spawned = new(false);
    private readonly Action<string> _log;
    private long _orphans;

    public ChildReaper(Action<string> log)
    {
        _log = log;
        var thread = new Thread(Run) { IsBackground = true, Name = "reaper" };
        thread.Start();
    }

    /// <summary>Orphans (children the agent did not start) reaped so far.</summary>
    public long OrphansReaped => Interlocked.Read(ref _orphans);

    /// <summary>Pids of the agent's own children that are still running.</summary>
    public int[] RunningChildren()
    {
        lock (_gate) return _waiting.Keys.ToArray();
    }

    /// <summary>
    /// Runs <paramref name="spawn"/> (which returns the new child's pid) under the reaper's lock, so
    /// the child is registered before its exit can be reaped.
    /// </summary>
    public Task<ExitStatus> Spawn(Func<int> spawn, out int pid)
    {
        lock (_gate)
        {
            pid = spawn();
            var tcs = new TaskCompletionSource<ExitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting[pid] = tcs;
            _spawned.Set();
            return tcs.Task;
        }
    }

    private unsafe void Run()
    {
        while (true)
        {
            int status;
            int pid = Native.waitpid(-1, &status, 0);
            if (pid > 0)
            {
                TaskCompletionSource<ExitStatus>? tcs;
                lock (_gate) _waiting.Remove(pid, out tcs);
                if (tcs is not null) tcs.TrySetResult(ExitStatus.FromWaitStatus(status));
                else Interlocked.Increment(ref _orphans);
                continue;
            }
            int err = Marshal.GetLastPInvokeError();
            if (err == EINTR) continue;
            if (err == ECHILD)
            {
                // No children at all: wait for the next spawn. (Orphans can only come from
                // descendants, which are children or children of children, so none arrive meanwhile.)
                _spawned.WaitOne();
                continue;
            }
            _log($"waitpid: {Native.ErrnoText(err)}");
            Thread.Sleep(100);
        }
    }

    private static readonly int EINTR = LibC.EINTR;
    private static readonly int ECHILD = LibC.ECHILD;
}
