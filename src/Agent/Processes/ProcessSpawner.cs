using System.Net.Sockets;
using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using Tmds.Linux;

namespace FireSharp.Agent.Processes;

/// <summary>A command could not be started (not found, not executable, bad working directory).</summary>
internal sealed class SpawnException(string message) : Exception(message);

/// <summary>
/// A started command. Its stdin, stdout and stderr are Unix socket pairs, so the agent reads and
/// writes them with the runtime's async socket I/O (epoll) instead of blocking threads on pipes.
/// The command leads its own session and process group, so <see cref="KillGroup"/> reaches
/// everything it started.
/// </summary>
internal sealed class SpawnedProcess : IDisposable
{
    public required int Pid { get; init; }
    public required Task<ExitStatus> Exited { get; init; }
    public required Socket Stdin { get; init; }
    public required Socket Stdout { get; init; }
    public required Socket Stderr { get; init; }

    /// <summary>Sends <paramref name="signal"/> to the command's process group.</summary>
    public void KillGroup(int signal)
    {
        if (LibC.killpg(Pid, signal) != 0) _ = LibC.kill(Pid, signal); // fails only if the process is gone already
    }

    public void Dispose()
    {
        Stdin.Dispose();
        Stdout.Dispose();
        Stderr.Dispose();
    }
}

internal static unsafe class ProcessSpawner
{
    /// <summary>PATH when neither the agent nor the request has one.</summary>
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>
    /// Finds <paramref name="file"/> like execvp: as given when it contains '/', else in each
    /// directory of <paramref name="path"/>.
    /// </summary>
    public static string? Resolve(string file, string? path)
    {
        if (file.Contains('/')) return file;
        foreach (var dir in (path ?? DefaultPath).Split(':'))
        {
            var candidate = Path.Combine(dir.Length == 0 ? "." : dir, file);
            if (IsExecutableFile(candidate)) return candidate;
        }
        return null;
    }

    private static bool IsExecutableFile(string path)
    {
        var p = Native.AllocUtf8(path);
        try { return LibC.access(p, LibC.X_OK) == 0 && File.Exists(path); }
        finally { NativeMemory.Free(p); }
    }

    /// <summary>
    /// Starts <paramref name="argv"/> with posix_spawn: a new session, the default disposition for
    /// every signal (the runtime ignores SIGPIPE, and a child must not inherit that) and an empty
    /// signal mask. Throws <see cref="SpawnException"/> if it cannot start.
    /// </summary>
    public static SpawnedProcess Spawn(ChildReaper reaper, IReadOnlyList<string> argv, IReadOnlyList<string> environment, string? cwd)
    {
        if (argv.Count == 0 || argv[0].Length == 0) throw new SpawnException("argv is empty");
        if (argv.Any(a => a.Contains('\0')) || environment.Any(e => e.Contains('\0')) || (cwd?.Contains('\0') ?? false))
            throw new SpawnException("argv, env and cwd must not contain NUL characters");
        string? pathVar = environment.FirstOrDefault(e => e.StartsWith("PATH=", StringComparison.Ordinal))?[5..];
        var executable = Resolve(argv[0], pathVar) ?? throw new SpawnException($"{argv[0]}: not found in PATH ({pathVar ?? DefaultPath})");

        int[] fds = new int[6];
        Array.Fill(fds, -1);
        try
        {
            for (int i = 0; i < 3; i++) SocketPair(out fds[2 * i], out fds[2 * i + 1]);
            // fds: [stdin parent, stdin child, stdout parent, stdout child, stderr parent, stderr child]
            var exited = reaper.Spawn(() => SpawnRaw(executable, argv, environment, cwd, fds[1], fds[3], fds[5]), out int pid);
            for (int i = 1; i < 6; i += 2) { _ = LibC.close(fds[i]); fds[i] = -1; } // the child's ends: it has its copies
            var process = new SpawnedProcess
            {
                Pid = pid,
                Exited = exited,
                Stdin = Wrap(ref fds[0]),
                Stdout = Wrap(ref fds[2]),
                Stderr = Wrap(ref fds[4]),
            };
            return process;
        }
        finally
        {
            foreach (var fd in fds)
                if (fd >= 0) _ = LibC.close(fd); // cleanup after a failure: the spawn error is the one to report
        }
    }

    private static Socket Wrap(ref int fd)
    {
        var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        fd = -1;
        return socket;
    }

    private static void SocketPair(out int parent, out int child)
    {
        int* sv = stackalloc int[2];
        if (LibC.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, sv) != 0)
            throw new SpawnException("socketpair: " + Native.ErrnoText(LibC.errno));
        parent = sv[0];
        child = sv[1];
    }

    private static int SpawnRaw(string executable, IReadOnlyList<string> argv, IReadOnlyList<string> environment, string? cwd, int stdin, int stdout, int stderr)
    {
        void* actions = NativeMemory.AllocZeroed(Native.SpawnFileActionsBytes);
        void* attr = NativeMemory.AllocZeroed(Native.SpawnAttrBytes);
        byte* path = Native.AllocUtf8(executable);
        byte* dir = cwd is { Length: > 0 } ? Native.AllocUtf8(cwd) : null;
        byte** argvNative = Native.AllocStringArray(argv);
        byte** envNative = Native.AllocStringArray(environment);
        bool actionsReady = false, attrReady = false;
        try
        {
            Check(Native.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
            actionsReady = true;
            Check(Native.posix_spawnattr_init(attr), "posix_spawnattr_init");
            attrReady = true;
            // dup2 clears FD_CLOEXEC on the target; the socket fds are never 0-2 because the agent
            // keeps 0-2 open (see AgentHost.EnsureStandardDescriptors).
            Check(Native.posix_spawn_file_actions_adddup2(actions, stdin, 0), "adddup2");
            Check(Native.posix_spawn_file_actions_adddup2(actions, stdout, 1), "adddup2");
            Check(Native.posix_spawn_file_actions_adddup2(actions, stderr, 2), "adddup2");
            if (dir != null) Check(Native.posix_spawn_file_actions_addchdir_np(actions, dir), "addchdir_np");

            sigset_t all, none;
            _ = LibC.sigfillset(&all); // these two fail only for a bad pointer (EINVAL)
            _ = LibC.sigemptyset(&none);
            Check(Native.posix_spawnattr_setsigdefault(attr, &all), "setsigdefault");
            Check(Native.posix_spawnattr_setsigmask(attr, &none), "setsigmask");
            Check(Native.posix_spawnattr_setflags(attr, (short)(Native.POSIX_SPAWN_SETSIGDEF | Native.POSIX_SPAWN_SETSIGMASK | Native.POSIX_SPAWN_SETSID)), "setflags");

            int pid;
            int err = Native.posix_spawn(&pid, path, actions, attr, argvNative, envNative);
            if (err != 0)
            {
                string what = dir != null && err == LibC.ENOENT && !Directory.Exists(cwd) ? $"cwd {cwd}" : argv[0];
                throw new SpawnException($"{what}: {Native.ErrnoText(err)}");
            }
            return pid;
        }
        finally
        {
            if (actionsReady) _ = Native.posix_spawn_file_actions_destroy(actions); // glibc: always 0
            if (attrReady) _ = Native.posix_spawnattr_destroy(attr);
            NativeMemory.Free(actions);
            NativeMemory.Free(attr);
            NativeMemory.Free(path);
            if (dir != null) NativeMemory.Free(dir);
            Native.FreeStringArray(argvNative);
            Native.FreeStringArray(envNative);
        }
    }

    private static void Check(int err, string what)
    {
        if (err != 0) throw new SpawnException($"{what}: {Native.ErrnoText(err)}");
    }
}
