using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Giving up privileges for good: supplementary groups, real/effective/saved ids, capabilities (every set and the
/// bounding set), no_new_privs, and rlimits. glibc applies setgroups/setresgid/setresuid to every thread of the
/// process; capset, the bounding set and no_new_privs are per thread (new threads inherit them). Each call throws
/// <see cref="JailSetupException"/> naming the step and errno.
/// </summary>
public static partial class Privileges
{
    public const int PR_SET_NO_NEW_PRIVS = 38, PR_CAPBSET_DROP = 24, PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_CLEAR_ALL = 4,
        PR_SET_DUMPABLE = 4, PR_GET_NO_NEW_PRIVS = 39;
    public const int RLIMIT_FSIZE = 1, RLIMIT_CORE = 4, RLIMIT_NOFILE = 7;
    private const uint LINUX_CAPABILITY_VERSION_3 = 0x20080522;

    [StructLayout(LayoutKind.Sequential)]
    private struct CapHeader
    {
        public uint Version;
        public int Pid;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CapData
    {
        public uint Effective;
        public uint Permitted;
        public uint Inheritable;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Max;
    }

    [LibraryImport("libc", EntryPoint = "setgroups", SetLastError = true)]
    private static partial int SetGroupsNative(nint size, nint list);

    [LibraryImport("libc", EntryPoint = "setresgid", SetLastError = true)]
    private static partial int SetResGidNative(uint rgid, uint egid, uint sgid);

    [LibraryImport("libc", EntryPoint = "setresuid", SetLastError = true)]
    private static partial int SetResUidNative(uint ruid, uint euid, uint suid);

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    private static partial int PrctlNative(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", EntryPoint = "capset", SetLastError = true)]
    private static partial int CapSetNative(ref CapHeader header, [In] CapData[] data);

    [LibraryImport("libc", EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRLimitNative(int resource, in RLimit limit);

    /// <summary>No supplementary groups; real, effective and saved gid, then uid, become the given ones.</summary>
    public static void BecomeUser(uint uid, uint gid)
    {
        JailSetupException.Check(SetGroupsNative(0, 0), "setgroups(0)");
        JailSetupException.Check(SetResGidNative(gid, gid, gid), $"setresgid({gid})");
        JailSetupException.Check(SetResUidNative(uid, uid, uid), $"setresuid({uid})");
    }

    /// <summary>Drops every capability from the calling thread's bounding set (needs CAP_SETPCAP: do it before <see cref="BecomeUser"/>).</summary>
    public static void DropBoundingSet()
    {
        for (int cap = 0; cap <= 63; cap++)
        {
            if (PrctlNative(PR_CAPBSET_DROP, (nuint)cap, 0, 0, 0) == -1)
            {
                int errno = Errno.Last;
                if (errno == Errno.EINVAL) break; // past the kernel's last capability
                throw new JailSetupException($"prctl(PR_CAPBSET_DROP, {cap})", errno);
            }
        }
    }

    /// <summary>Empties the effective, permitted, inheritable and ambient sets of the calling thread.</summary>
    public static void ClearCapabilities()
    {
        var header = new CapHeader { Version = LINUX_CAPABILITY_VERSION_3, Pid = 0 };
        JailSetupException.Check(CapSetNative(ref header, new CapData[2]), "capset(0)");
        JailSetupException.Check(PrctlNative(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    }

    /// <summary>PR_SET_NO_NEW_PRIVS: no execve of this thread (or its later threads) can gain privileges.</summary>
    public static void SetNoNewPrivileges() =>
        JailSetupException.Check(PrctlNative(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)");

    /// <summary>setrlimit(2) with soft = hard = <paramref name="value"/>.</summary>
    public static void SetLimit(int resource, ulong value) =>
        JailSetupException.Check(SetRLimitNative(resource, new RLimit { Current = value, Max = value }), $"setrlimit({resource}, {value})");
}
