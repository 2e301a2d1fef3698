using System.Diagnostics;
using FireSharp.Kvm.Interop;
using static FireSharp.Kvm.Interop.Seccomp;

namespace FireSharp.Worker;

/// <summary>
/// The worker's seccomp-BPF allow-list (docs/isolation.md, "seccomp"): installed with TSYNC on every thread once
/// the machine is built and before its vCPU threads start (a created machine's start, a restore's resume), so only
/// what a running VM needs is left: its vCPU loop, devices, snapshots, the daemon's socket and the .NET runtime.
/// Anything else kills the process (SIGSYS), which the daemon reports as EXIT_KIND_SECCOMP.
/// </summary>
/// <remarks>
/// Derived with <c>strace -f</c> of the worker over the daemon tests (every syscall after the first KVM_RUN), and
/// for ioctls from the code (each request a running machine can issue). To tighten, drop a line: the daemon tests
/// fail on the first syscall that was still needed, and the kernel log names it (audit type=1326, syscall=N).
/// </remarks>
public static class WorkerSeccomp
{
    private const uint AfUnix = 1, PrSetName = 15;
    private const ulong CloneVm = 0x100, CloneSighand = 0x800, CloneThread = 0x10000;
    private const int Enosys = 38;

    /// <summary>One rule: a syscall, when it is allowed (all of <see cref="Args"/> must hold; none = always), and why.</summary>
    public sealed record Rule(string Syscall, string Why, params ArgCmp[] Args)
    {
        /// <summary>The action when the rule matches (allow unless stated).</summary>
        public uint Action { get; init; } = ActAllow;
    }

    /// <summary>ioctl requests a running machine issues (KVM on /dev/kvm, the VM and vCPU fds; TUN on a tap), by name and number.</summary>
    public static IReadOnlyList<(string Name, uint Request)> Ioctls { get; } =
    [
        ("KVM_RUN", KvmIoctls.KVM_RUN),                                   // the vCPU loop
        ("KVM_IRQ_LINE", KvmIoctls.KVM_IRQ_LINE),                         // device interrupts (legacy and virtio without irqfd)
        ("KVM_TRANSLATE", KvmIoctls.KVM_TRANSLATE),                       // the vCPU runner reads the instruction at RIP (PVM quirks)
        ("KVM_SET_REGS", KvmIoctls.KVM_SET_REGS),                         // PVM quirks: the runner steps over an int3 or fwait KVM cannot emulate
        ("KVM_SET_VCPU_EVENTS", KvmIoctls.KVM_SET_VCPU_EVENTS),           // PVM quirks: and injects the #BP an int3 raises
        ("KVM_CHECK_EXTENSION", KvmIoctls.KVM_CHECK_EXTENSION),           // snapshot: which state can be saved
        ("KVM_GET_MSR_INDEX_LIST", KvmIoctls.KVM_GET_MSR_INDEX_LIST),     // snapshot: the MSRs to save
        ("KVM_GET_REGS", KvmIoctls.KVM_GET_REGS),                         // snapshot (and vCPU diagnostics)
        ("KVM_GET_SREGS", KvmIoctls.KVM_GET_SREGS),
        ("KVM_GET_FPU", KvmIoctls.KVM_GET_FPU),
        ("KVM_GET_XSAVE", KvmIoctls.KVM_GET_XSAVE),
        ("KVM_GET_XCRS", KvmIoctls.KVM_GET_XCRS),
        ("KVM_GET_DEBUGREGS", KvmIoctls.KVM_GET_DEBUGREGS),
        ("KVM_GET_MSRS", KvmIoctls.KVM_GET_MSRS),
        ("KVM_GET_LAPIC", KvmIoctls.KVM_GET_LAPIC),
        ("KVM_GET_VCPU_EVENTS", KvmIoctls.KVM_GET_VCPU_EVENTS),
        ("KVM_GET_MP_STATE", KvmIoctls.KVM_GET_MP_STATE),
        ("KVM_GET_IRQCHIP", KvmIoctls.KVM_GET_IRQCHIP),
        ("KVM_GET_PIT2", KvmIoctls.KVM_GET_PIT2),
        ("KVM_GET_CLOCK", KvmIoctls.KVM_GET_CLOCK),
        ("KVM_GET_DIRTY_LOG", KvmIoctls.KVM_GET_DIRTY_LOG),               // diff snapshots
        ("KVM_SET_USER_MEMORY_REGION", KvmIoctls.KVM_SET_USER_MEMORY_REGION), // dirty-page logging on and off (same slots)
        ("TUNSETOFFLOAD", NetInterop.TUNSETOFFLOAD),                // the guest's virtio-net driver negotiates offloads after boot
    ];

    /// <summary>The allow-list. Every syscall not named here (execve, fork, socket other than AF_UNIX, ptrace, mount, ...) kills the process.</summary>
    public static IReadOnlyList<Rule> Rules { get; } = BuildRules();

    private static List<Rule> BuildRules()
    {
        var rules = new List<Rule>
        {
            // The .NET runtime: threads, locks, memory, signals (GC suspension and the vCPU kick are signals).
            new("futex", "locks, monitors, thread pool waits"),
            new("sched_yield", "spin waits (runtime, vCPU pause)"),
            new("sched_getaffinity", "thread pool sizing (each new pool thread asks)"),
            new("set_robust_list", "new threads (glibc pthread_create)"),
            new("rseq", "new threads (glibc registers restartable sequences)"),
            new("sigaltstack", "new threads (the runtime's stack-overflow handler stack)"),
            new("gettid", "runtime thread ids"),
            new("getpid", "runtime, logging"),
            new("getrusage", "the GC's CPU accounting"),
            new("membarrier", "the GC's FlushProcessWriteBuffers"),
            new("tgkill", "GC suspension (SIGRTMIN) and the vCPU kick signal (SIGRTMIN+6)"),
            new("rt_sigaction", "signal registration (SIGTERM handling, the kick signal)"),
            new("rt_sigprocmask", "threads block signals around waits"),
            new("rt_sigreturn", "return from every signal handler"),
            new("restart_syscall", "a syscall interrupted by a signal"),
            new("mmap", "heap and thread stacks"),
            new("munmap", "heap, stacks, guest memory and kvm_run released at the end"),
            new("mprotect", "heap commit, thread stack guards"),
            new("madvise", "GC decommit (MADV_DONTNEED), dump flags"),
            new("brk", "malloc"),
            new("nanosleep", "Thread.Sleep"),
            new("clock_nanosleep", "Thread.Sleep"),
            new("clock_gettime", "time (normally the vDSO; the syscall when it falls back)"),
            new("getrandom", "Guid.NewGuid (snapshot temporary directory names)"),
            new("exit", "a thread ends"),
            new("exit_group", "the worker ends"),
            new("prctl", "thread names (PR_SET_NAME) only", ArgCmp.Equal32(0, PrSetName)),
            // Threads only: clone with CLONE_VM|CLONE_SIGHAND|CLONE_THREAD. fork, vfork and a process clone are refused.
            new("clone", "new threads (CLONE_THREAD|CLONE_VM|CLONE_SIGHAND); never a new process",
                ArgCmp.AllSet(0, CloneVm | CloneSighand | CloneThread)),
            // clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes glibc fall back to clone.
            new("clone3", "refused with ENOSYS so that glibc uses clone, whose flags the filter checks") { Action = ActErrno(Enosys) },

            // Files: drives, the console log, snapshots (written by the worker into the directory it is given).
            new("read", "drives, sockets, eventfds, the tap"),
            new("write", "drives, sockets, eventfds, the tap, the log"),
            new("readv", "drives, the tap"),
            new("writev", "drives, the tap"),
            new("pread64", "drives, snapshot memory"),
            new("pwrite64", "drives, snapshot files"),
            new("preadv", "drives"),
            new("pwritev", "drives"),
            new("lseek", "files"),
            new("close", "files, sockets, fds of a released machine"),
            new("fstat", "files"),
            new("newfstatat", "files (.NET File and Directory)"),
            new("stat", "files (.NET File and Directory)"),
            new("lstat", "files (.NET File and Directory)"),
            new("fcntl", "non-blocking sockets (F_GETFL/F_SETFL)"),
            new("flock", ".NET FileStream sharing (snapshot files)"),
            new("fsync", "snapshot files are synced before their rename"),
            new("fdatasync", "virtio-blk flush"),
            new("ftruncate", "snapshot memory file size"),
            new("openat", "snapshot files and directories, /proc/self/pagemap (diff snapshots), /sys cpu count (thread pool)"),
            new("mkdir", "snapshot directories"),
            new("mkdirat", "snapshot directories"),
            new("rename", "a snapshot directory made visible at once"),
            new("renameat", "a snapshot directory made visible at once"),
            new("renameat2", "a snapshot directory made visible at once"),
            new("unlink", "vsock sockets and the worker socket removed at the end"),
            new("unlinkat", "a failed snapshot's temporary directory removed"),
            new("chmod", "socket permissions"),
            new("poll", "device threads wait on eventfds"),
            new("ppoll", "device threads wait on eventfds"),
            new("epoll_wait", ".NET socket engine"),
            new("epoll_pwait", ".NET socket engine"),
            new("epoll_ctl", ".NET socket engine: accepted sockets join it"),

            // Sockets: Unix only (the daemon's connections, vsock over Unix sockets).
            new("socket", "AF_UNIX only (vsock: connections to the host's Unix sockets)", ArgCmp.Equal32(0, AfUnix)),
            new("accept4", "daemon and vsock connections"),
            new("connect", "vsock: a guest connection to a host port"),
            new("sendto", "sockets"),
            new("recvfrom", "sockets"),
            new("sendmsg", "sockets"),
            new("recvmsg", "sockets"),
            new("shutdown", "sockets"),
            new("getsockopt", "socket errors (SO_ERROR after connect)"),
        };
        // ioctl: one rule per request number (the kernel reads it as unsigned int).
        foreach (var (name, request) in Ioctls)
            rules.Add(new Rule("ioctl", name, ArgCmp.Equal32(1, request)));
        return rules;
    }

    /// <summary>Builds the filter (not loaded). <paramref name="defaultAction"/> is for tests and derivation (log instead of kill).</summary>
    public static SeccompFilter Build(uint defaultAction = ActKillProcess)
    {
        var filter = new SeccompFilter(defaultAction);
        try
        {
            filter.ThreadSync = true;
            filter.NoNewPrivs = true;
            foreach (var rule in Rules) filter.Add(rule.Action, rule.Syscall, rule.Args);
            return filter;
        }
        catch
        {
            filter.Dispose();
            throw;
        }
    }

    /// <summary>Builds and loads the filter on every thread of this process; returns how long that took.</summary>
    public static TimeSpan Install()
    {
        long start = Stopwatch.GetTimestamp();
        using var filter = Build();
        filter.Load();
        return Stopwatch.GetElapsedTime(start);
    }
}
