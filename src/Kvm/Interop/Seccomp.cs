using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// libseccomp (Debian <c>libseccomp2</c>, <c>libseccomp.so.2</c>): builds a seccomp-BPF filter from rules and
/// loads it into the kernel. The constants and <see cref="ArgCmp"/> follow libseccomp's public header (API
/// level 2.5); every call returns 0 or a negative errno, turned into a <see cref="SeccompException"/>.
/// <see cref="SeccompFilter"/> is the managed side: one filter being built, released when disposed.
/// </summary>
public static partial class Seccomp
{
    private const string Lib = "libseccomp.so.2";

    /// <summary>Actions (the filter's return values as libseccomp encodes them).</summary>
    public const uint ActKillProcess = 0x80000000, ActKillThread = 0x00000000, ActLog = 0x7ffc0000, ActAllow = 0x7fff0000;

    /// <summary>The syscall fails with <paramref name="errno"/> instead of running.</summary>
    public static uint ActErrno(int errno) => 0x00050000u | ((uint)errno & 0xffff);

    /// <summary>libseccomp's "no such syscall" (__NR_SCMP_ERROR).</summary>
    public const int NoSyscall = -1;

    /// <summary>enum scmp_compare.</summary>
    public enum CompareOp
    {
        NotEqual = 1,
        Less = 2,
        LessOrEqual = 3,
        Equal = 4,
        GreaterOrEqual = 5,
        Greater = 6,
        /// <summary>(argument &amp; DatumA) == DatumB.</summary>
        MaskedEqual = 7,
    }

    /// <summary>struct scmp_arg_cmp: which argument (0-5), the comparison, and its one or two operands.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public readonly struct ArgCmp(uint arg, CompareOp op, ulong datumA, ulong datumB = 0)
    {
        public readonly uint Arg = arg;
        public readonly CompareOp Op = op;
        public readonly ulong DatumA = datumA;
        public readonly ulong DatumB = datumB;

        /// <summary>The low 32 bits of the argument equal <paramref name="value"/> (for int and unsigned int arguments: the kernel ignores the upper half).</summary>
        public static ArgCmp Equal32(uint arg, uint value) => new(arg, CompareOp.MaskedEqual, 0xffff_ffff, value);

        /// <summary>Every bit of <paramref name="bits"/> is set in the argument.</summary>
        public static ArgCmp AllSet(uint arg, ulong bits) => new(arg, CompareOp.MaskedEqual, bits, bits);

        public override string ToString() => $"arg{Arg} {Op} 0x{DatumA:x} 0x{DatumB:x}";
    }

    /// <summary>enum scmp_filter_attr (the ones used).</summary>
    internal enum FilterAttr
    {
        ActBadArch = 2,
        CtlNoNewPrivs = 3,
        CtlThreadSync = 4,
        CtlLog = 6,
    }

    [LibraryImport(Lib, EntryPoint = "seccomp_init")]
    internal static partial nint Init(uint defaultAction);

    [LibraryImport(Lib, EntryPoint = "seccomp_release")]
    internal static partial void Release(nint ctx);

    [LibraryImport(Lib, EntryPoint = "seccomp_attr_set")]
    internal static partial int AttrSet(nint ctx, FilterAttr attr, uint value);

    [LibraryImport(Lib, EntryPoint = "seccomp_rule_add_array")]
    internal static partial int RuleAddArray(nint ctx, uint action, int syscall, uint argCount, ReadOnlySpan<ArgCmp> args);

    [LibraryImport(Lib, EntryPoint = "seccomp_syscall_resolve_name", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int ResolveNameNative(string name);

    [LibraryImport(Lib, EntryPoint = "seccomp_syscall_resolve_num_arch")]
    private static partial nint ResolveNumNative(uint arch, int number);

    [LibraryImport(Lib, EntryPoint = "seccomp_load")]
    internal static partial int Load(nint ctx);

    [LibraryImport(Lib, EntryPoint = "seccomp_export_bpf")]
    internal static partial int ExportBpf(nint ctx, int fd);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);

    [LibraryImport("libc", EntryPoint = "execve", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Execve(string path, string?[] argv, string?[] envp);

    /// <summary>
    /// Tests only (the worker's seccomp test trigger): execve(<paramref name="path"/>) with no arguments. Under the
    /// worker's filter the process is killed; without one, the process is replaced. Returns -errno if it fails.
    /// </summary>
    public static int ExecveForTest(string path) =>
        Execve(path, [path, null], [null]) < 0 ? -Errno.Last : 0;

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>Tests only (the worker's seccomp test trigger): socket(AF_INET, SOCK_STREAM, 0), closed at once. Under the worker's filter the process is killed.</summary>
    public static int InetSocketForTest()
    {
        int fd = Socket(2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
        if (fd < 0) return -Errno.Last;
        _ = Close(fd);
        return 0;
    }

    /// <summary>Is libseccomp.so.2 there to be loaded?</summary>
    public static bool IsAvailable()
    {
        try { return ResolveNameNative("read") == 0; }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
    }

    /// <summary>The native (x86_64) number of a syscall, or <see cref="NoSyscall"/> for a name libseccomp does not know.</summary>
    public static int SyscallNumber(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0 || name.Contains('\0', StringComparison.Ordinal)) return NoSyscall;
        return Guard(() => ResolveNameNative(name));
    }

    /// <summary>The native name of a syscall number ("execve" for 59), or null when there is none or libseccomp is missing.</summary>
    public static string? SyscallName(int number)
    {
        if (number < 0) return null;
        nint p;
        try { p = ResolveNumNative(0 /* SCMP_ARCH_NATIVE */, number); }
        catch (DllNotFoundException) { return null; }
        if (p == 0) return null;
        try { return Marshal.PtrToStringUTF8(p); }
        finally { Free(p); }
    }

    internal static T Guard<T>(Func<T> call)
    {
        try { return call(); }
        catch (DllNotFoundException e) { throw new SeccompException($"{Lib} cannot be loaded (install the Debian package libseccomp2): {e.Message}", e); }
    }

    /// <summary>A negative errno from libseccomp as an exception naming what was done.</summary>
    internal static void Check(int rc, string what)
    {
        if (rc < 0) throw new SeccompException($"seccomp: {what}: {Errno.Text(-rc)}");
    }
}

/// <summary>Building or loading a seccomp filter failed (libseccomp missing, an unknown syscall, a rule or load refused).</summary>
public sealed class SeccompException : Exception
{
    public SeccompException() { }
    public SeccompException(string message) : base(message) { }
    public SeccompException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// One seccomp filter being built with libseccomp: a default action, then rules (syscall by name, action, argument
/// comparisons; several rules for one syscall are alternatives). <see cref="Load"/> installs it in the calling
/// process; it cannot be taken back. Not thread-safe.
/// </summary>
public sealed class SeccompFilter : IDisposable
{
    private nint _ctx;

    /// <param name="defaultAction">What a syscall no rule matches gets (for example <see cref="Seccomp.ActKillProcess"/>).</param>
    public SeccompFilter(uint defaultAction)
    {
        _ctx = Seccomp.Guard(() => Seccomp.Init(defaultAction));
        if (_ctx == 0) throw new SeccompException($"seccomp: seccomp_init(0x{defaultAction:x}) failed (an invalid default action?)");
    }

    /// <summary>Apply the filter to every thread of the process on load (SECCOMP_FILTER_FLAG_TSYNC), not just the caller's.</summary>
    public bool ThreadSync { set => Set(Seccomp.FilterAttr.CtlThreadSync, value, "thread sync"); }

    /// <summary>Set PR_SET_NO_NEW_PRIVS on load (libseccomp's default is on).</summary>
    public bool NoNewPrivs { set => Set(Seccomp.FilterAttr.CtlNoNewPrivs, value, "no_new_privs"); }

    /// <summary>Log the actions other than allow (SECCOMP_FILTER_FLAG_LOG) to the kernel's audit log.</summary>
    public bool LogNotAllowed { set => Set(Seccomp.FilterAttr.CtlLog, value, "log"); }

    /// <summary>Adds a rule for the syscall called <paramref name="syscall"/>; an unknown name is an error.</summary>
    public void Add(uint action, string syscall, params ReadOnlySpan<Seccomp.ArgCmp> args)
    {
        int nr = Seccomp.SyscallNumber(syscall);
        if (nr == Seccomp.NoSyscall) throw new SeccompException($"seccomp: unknown syscall '{syscall}'");
        Add(action, nr, syscall, args);
    }

    /// <summary>Adds a rule for syscall number <paramref name="number"/>.</summary>
    public void Add(uint action, int number, string? name, ReadOnlySpan<Seccomp.ArgCmp> args)
    {
        foreach (var a in args)
            if (a.Arg > 5) throw new SeccompException($"seccomp: {name ?? number.ToString(System.Globalization.CultureInfo.InvariantCulture)}: argument {a.Arg} does not exist (0-5)");
        Seccomp.Check(Seccomp.RuleAddArray(Ctx, action, number, (uint)args.Length, args),
            $"rule for {name ?? "syscall"} ({number}){(args.IsEmpty ? "" : " if " + string.Join(" and ", args.ToArray()))}");
    }

    /// <summary>Installs the filter in the calling process (all its threads with <see cref="ThreadSync"/>).</summary>
    public void Load() => Seccomp.Check(Seccomp.Load(Ctx), "loading the filter");

    /// <summary>The filter as the kernel would get it: struct sock_filter instructions, 8 bytes each.</summary>
    public byte[] ExportBpf()
    {
        string path = Path.Combine(Path.GetTempPath(), $"firesharp-bpf-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (SafeFileHandle h = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
            {
                bool added = false;
                h.DangerousAddRef(ref added);
                try { Seccomp.Check(Seccomp.ExportBpf(Ctx, (int)h.DangerousGetHandle()), "exporting the filter"); }
                finally { if (added) h.DangerousRelease(); }
            }
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private nint Ctx => _ctx != 0 ? _ctx : throw new ObjectDisposedException(nameof(SeccompFilter));

    private void Set(Seccomp.FilterAttr attr, bool value, string what) =>
        Seccomp.Check(Seccomp.AttrSet(Ctx, attr, value ? 1u : 0u), $"setting {what}");

    public void Dispose()
    {
        if (_ctx == 0) return;
        Seccomp.Release(_ctx);
        _ctx = 0;
    }
}
