using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;

namespace FireSharp.Agent.Interop;

/// <summary>
/// libc calls that Tmds.LibC does not bind (waitpid, reboot, posix_spawn, clock_gettime), and the
/// one place errno becomes text. Everything else comes from <see cref="LibC"/>.
/// </summary>
internal static unsafe partial class Native
{
    // <sys/reboot.h> (glibc RB_*): the magic values of reboot(2)'s cmd.
    public const int RB_AUTOBOOT = 0x01234567;
    public const int RB_POWER_OFF = 0x4321fedc;

    // glibc <spawn.h> flags for posix_spawnattr_setflags.
    public const short POSIX_SPAWN_SETSIGDEF = 0x04;
    public const short POSIX_SPAWN_SETSIGMASK = 0x08;
    public const short POSIX_SPAWN_SETSID = 0x80;

    // glibc's posix_spawn_file_actions_t is 80 bytes and posix_spawnattr_t 336; both are opaque,
    // so reserve more than either and let the *_init functions fill them.
    public const int SpawnFileActionsBytes = 256;
    public const int SpawnAttrBytes = 1024;

    public const int CLOCK_BOOTTIME = 7;
    public const int PR_SET_CHILD_SUBREAPER = 36;
    public const int SYS_prctl = 157; // x86_64

    [LibraryImport("libc", SetLastError = true)]
    public static partial int waitpid(int pid, int* status, int options);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int reboot(int cmd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int clock_gettime(int clockId, timespec* tp);

    // posix_spawn* return an error number instead of setting errno.
    [LibraryImport("libc")]
    public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);

    [LibraryImport("libc")]
    public static partial int posix_spawn_file_actions_init(void* fileActions);

    [LibraryImport("libc")]
    public static partial int posix_spawn_file_actions_destroy(void* fileActions);

    [LibraryImport("libc")]
    public static partial int posix_spawn_file_actions_adddup2(void* fileActions, int fd, int newFd);

    /// <summary>glibc 2.29+.</summary>
    [LibraryImport("libc")]
    public static partial int posix_spawn_file_actions_addchdir_np(void* fileActions, byte* path);

    [LibraryImport("libc")]
    public static partial int posix_spawnattr_init(void* attr);

    [LibraryImport("libc")]
    public static partial int posix_spawnattr_destroy(void* attr);

    [LibraryImport("libc")]
    public static partial int posix_spawnattr_setflags(void* attr, short flags);

    [LibraryImport("libc")]
    public static partial int posix_spawnattr_setsigmask(void* attr, sigset_t* mask);

    [LibraryImport("libc")]
    public static partial int posix_spawnattr_setsigdefault(void* attr, sigset_t* set);

    /// <summary>CLOCK_BOOTTIME in microseconds (time since the kernel started, including suspend).</summary>
    public static ulong BootTimeMicros()
    {
        timespec ts;
        if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return 0;
        return (ulong)((long)ts.tv_sec * 1_000_000L + (long)ts.tv_nsec / 1000L);
    }

    /// <summary>"ENOENT (No such file or directory)" style text for an errno.</summary>
    public static string ErrnoText(int errno)
    {
        byte* buffer = stackalloc byte[256];
        // Tmds binds the XSI strerror_r: it fills the buffer and returns 0.
        if (LibC.strerror_r(errno, buffer, 256) != 0) return $"errno {errno}";
        return $"{Marshal.PtrToStringUTF8((nint)buffer)} (errno {errno})";
    }

    /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/> in native memory (free with <see cref="NativeMemory.Free"/>).</summary>
    public static byte* AllocUtf8(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        var p = (byte*)NativeMemory.Alloc((nuint)n + 1);
        Encoding.UTF8.GetBytes(s, new Span<byte>(p, n));
        p[n] = 0;
        return p;
    }

    /// <summary>A NULL-terminated array of NUL-terminated UTF-8 strings (free with <see cref="FreeStringArray"/>).</summary>
    public static byte** AllocStringArray(IReadOnlyList<string> strings)
    {
        var array = (byte**)NativeMemory.AllocZeroed((nuint)(strings.Count + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < strings.Count; i++) array[i] = AllocUtf8(strings[i]);
        return array;
    }

    public static void FreeStringArray(byte** array)
    {
        if (array == null) return;
        for (int i = 0; array[i] != null; i++) NativeMemory.Free(array[i]);
        NativeMemory.Free(array);
    }
}
