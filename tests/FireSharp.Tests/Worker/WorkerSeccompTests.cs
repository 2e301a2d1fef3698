using FireSharp.Daemon.Workers;
using FireSharp.Kvm.Interop;
using FireSharp.Worker;

namespace FireSharp.Tests.Worker;

/// <summary>
/// The worker's seccomp allow-list as data and as a built filter (libseccomp through P/Invoke), the libseccomp
/// bindings' refusals, and how the daemon reads a seccomp kill from the kernel log. Loading the filter is tested
/// through the real worker (SeccompDaemonTests): it cannot be taken back, so never in the test process.
/// </summary>
public sealed class WorkerSeccompTests
{
    [Fact]
    public void Every_rule_names_a_syscall_libseccomp_knows_and_gives_a_reason()
    {
        Assert.True(Seccomp.IsAvailable(), "libseccomp.so.2 is missing (make deps installs libseccomp2)");
        foreach (var rule in WorkerSeccomp.Rules)
        {
            Assert.NotEqual(Seccomp.NoSyscall, Seccomp.SyscallNumber(rule.Syscall));
            Assert.False(string.IsNullOrWhiteSpace(rule.Why), rule.Syscall);
        }
    }

    [Fact]
    public void The_filter_builds_and_exports_as_bpf()
    {
        using var filter = WorkerSeccomp.Build();
        byte[] bpf = filter.ExportBpf();
        // struct sock_filter is 8 bytes; the kernel takes at most 4096 instructions.
        Assert.True(bpf.Length >= 8 * WorkerSeccomp.Rules.Count, $"{bpf.Length} bytes for {WorkerSeccomp.Rules.Count} rules");
        Assert.Equal(0, bpf.Length % 8);
        Assert.True(bpf.Length / 8 <= 4096);
        // The last instructions return; the default (kill process, 0x80000000) is one of the returns.
        Assert.Contains(Enumerable.Range(0, bpf.Length / 8), i => BitConverter.ToUInt32(bpf, i * 8 + 4) == Seccomp.ActKillProcess && BitConverter.ToUInt16(bpf, i * 8) == 0x06);
    }

    [Theory]
    [InlineData("execve")]
    [InlineData("execveat")]
    [InlineData("fork")]
    [InlineData("vfork")]
    [InlineData("ptrace")]
    [InlineData("mount")]
    [InlineData("setns")]
    [InlineData("unshare")]
    [InlineData("process_vm_writev")]
    [InlineData("kill")]
    [InlineData("bind")]
    [InlineData("listen")]
    public void Dangerous_syscalls_are_not_allowed(string syscall) =>
        Assert.DoesNotContain(WorkerSeccomp.Rules, r => r.Syscall == syscall);

    [Fact]
    public void Socket_clone_ioctl_and_prctl_are_allowed_only_with_their_argument_checks()
    {
        var socket = Assert.Single(WorkerSeccomp.Rules, r => r.Syscall == "socket");
        var domain = Assert.Single(socket.Args);
        Assert.Equal((0u, Seccomp.CompareOp.MaskedEqual, 0xffff_ffffUL, 1UL), (domain.Arg, domain.Op, domain.DatumA, domain.DatumB)); // AF_UNIX

        var clone = Assert.Single(WorkerSeccomp.Rules, r => r.Syscall == "clone");
        var flags = Assert.Single(clone.Args);
        Assert.Equal(Seccomp.CompareOp.MaskedEqual, flags.Op);
        Assert.Equal(0x10000UL, flags.DatumB & 0x10000UL); // CLONE_THREAD required
        Assert.Equal(flags.DatumA, flags.DatumB);

        var clone3 = Assert.Single(WorkerSeccomp.Rules, r => r.Syscall == "clone3");
        Assert.Equal(Seccomp.ActErrno(38), clone3.Action); // ENOSYS: glibc falls back to clone

        var ioctls = WorkerSeccomp.Rules.Where(r => r.Syscall == "ioctl").ToList();
        Assert.All(ioctls, r => Assert.Single(r.Args));
        Assert.Equal(WorkerSeccomp.Ioctls.Count, ioctls.Count);
        var requests = ioctls.Select(r => r.Args[0].DatumB).ToHashSet();
        Assert.Contains(KvmIoctls.KVM_RUN, requests);
        Assert.Contains(KvmIoctls.KVM_GET_DIRTY_LOG, requests);
        // The run loop's PVM fix-ups set registers and events (a Linux guest's int3); nothing else sets vCPU state.
        Assert.Contains(KvmIoctls.KVM_SET_REGS, requests);
        Assert.Contains(KvmIoctls.KVM_SET_VCPU_EVENTS, requests);
        foreach (uint setup in (uint[])[KvmIoctls.KVM_CREATE_VM, KvmIoctls.KVM_CREATE_VCPU, KvmIoctls.KVM_SET_CPUID2, KvmIoctls.KVM_SET_SREGS,
            KvmIoctls.KVM_SET_MSRS, KvmIoctls.KVM_IRQFD, KvmIoctls.KVM_IOEVENTFD, NetInterop.TUNSETIFF])
            Assert.DoesNotContain((ulong)setup, requests);

        Assert.Single(Assert.Single(WorkerSeccomp.Rules, r => r.Syscall == "prctl").Args);
        Assert.All(WorkerSeccomp.Rules.Where(r => r.Action != Seccomp.ActAllow), r => Assert.Equal("clone3", r.Syscall));
    }

    [Fact]
    public void Names_and_numbers_resolve_both_ways()
    {
        Assert.Equal(59, Seccomp.SyscallNumber("execve"));
        Assert.Equal(41, Seccomp.SyscallNumber("socket"));
        Assert.Equal("execve", Seccomp.SyscallName(59));
        Assert.Equal(Seccomp.NoSyscall, Seccomp.SyscallNumber("no_such_syscall"));
        Assert.Equal(Seccomp.NoSyscall, Seccomp.SyscallNumber(""));
        Assert.Equal(Seccomp.NoSyscall, Seccomp.SyscallNumber("read\0write"));
        Assert.Null(Seccomp.SyscallName(-1));
        Assert.Null(Seccomp.SyscallName(100_000));
    }

    [Fact]
    public void Bad_rules_are_refused_with_a_message()
    {
        using var filter = new SeccompFilter(Seccomp.ActKillProcess);
        var unknown = Assert.Throws<SeccompException>(() => filter.Add(Seccomp.ActAllow, "no_such_syscall"));
        Assert.Contains("unknown syscall 'no_such_syscall'", unknown.Message);
        var badArg = Assert.Throws<SeccompException>(() => filter.Add(Seccomp.ActAllow, "read", new Seccomp.ArgCmp(6, Seccomp.CompareOp.Equal, 0)));
        Assert.Contains("argument 6", badArg.Message);
        // libseccomp's own refusal: a rule whose action is the filter's default action (EACCES or EINVAL, as an errno text).
        var same = Assert.Throws<SeccompException>(() => filter.Add(Seccomp.ActKillProcess, "read"));
        Assert.Contains("read (0)", same.Message);
        filter.Dispose();
        Assert.Throws<ObjectDisposedException>(() => filter.Add(Seccomp.ActAllow, "read"));
    }

    [Fact]
    public void A_seccomp_kill_is_found_in_the_kernel_log_by_pid()
    {
        const string log = """
            <5>[  100.000000] audit: type=1326 audit(1700000000.000:10): auid=4294967295 uid=0 gid=0 ses=4294967295 subj=unconfined pid=4242 comm="firesharp-vmm" exe="/x/firesharp-vmm" sig=31 arch=c000003e syscall=41 compat=0 ip=0x7f code=0x80000000
            <5>[  101.000000] audit: type=1326 audit(1700000001.000:11): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=4242 comm="firesharp-vmm" exe="/x/firesharp-vmm" sig=31 arch=c000003e syscall=59 compat=0 ip=0x7f code=0x80000000
            <5>[  102.000000] audit: type=1326 audit(1700000002.000:12): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=777 comm="other" exe="/bin/other" sig=0 arch=c000003e syscall=2 compat=0 ip=0x7f code=0x7ffc0000
            """;
        Assert.Equal(59, SeccompKills.FindSyscall(log, 4242)); // the last kill of that pid
        Assert.Null(SeccompKills.FindSyscall(log, 777));       // logged, not killed (sig=0)
        Assert.Null(SeccompKills.FindSyscall(log, 42));        // pid 42 is not pid 4242
        Assert.Null(SeccompKills.FindSyscall(null, 4242));
        Assert.Null(SeccompKills.FindSyscall("", 4242));
    }

    [Fact]
    public async Task A_kill_the_log_does_not_name_is_still_a_seccomp_exit()
    {
        var exit = await SeccompKills.DescribeAsync(4242, () => "nothing here").WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(exit.KilledBySeccomp);
        Assert.Null(exit.Syscall);
        Assert.Contains("seccomp", exit.Reason);
        var named = await SeccompKills.DescribeAsync(4242, () => "audit: type=1326 pid=4242 sig=31 syscall=59").WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(59, named.Syscall);
        Assert.Contains("syscall 59 (execve)", named.Reason);
    }
}

/// <summary>docs/isolation.md lists the filter as it is: every rule's syscall and every ioctl request, with its number.</summary>
public sealed class WorkerSeccompDocTests
{
    [Fact]
    public void The_documented_list_is_the_code_list()
    {
        string doc = File.ReadAllText(Path.Combine(FireSharp.Tests.Support.TestPaths.RepoRoot, "docs", "isolation.md"));
        foreach (var rule in WorkerSeccomp.Rules.Where(r => r.Syscall != "ioctl"))
            Assert.Contains($"| `{rule.Syscall}` |", doc);
        foreach (var (name, request) in WorkerSeccomp.Ioctls)
            Assert.Contains($"| `{name}` | `0x{request:x8}` |", doc);
    }
}
