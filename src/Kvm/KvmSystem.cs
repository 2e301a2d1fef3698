using FireSharp.Kvm.Interop;
using static FireSharp.Kvm.Interop.KvmIoctls;

namespace FireSharp.Kvm;

/// <summary>Why /dev/kvm cannot be used, for a clear one-line error with a hint.</summary>
public enum KvmUnavailableReason { None, Missing, PermissionDenied, WrongApiVersion, OpenFailed }

/// <summary>The /dev/kvm system fd: capability queries, CPUID/MSR lists and VM creation.</summary>
public sealed unsafe class KvmSystem : IDisposable
{
    public const string DevicePath = "/dev/kvm";
    public const int ExpectedApiVersion = 12;
    private const int MaxCpuidEntries = 256;

    private readonly KvmSystemHandle _handle;

    private KvmSystem(KvmSystemHandle handle) => _handle = handle;

    /// <summary>Opens /dev/kvm and checks the API version.</summary>
    public static KvmSystem Open(string path = DevicePath)
    {
        int fd = Descriptors.Open(path, Descriptors.ORdWr | Descriptors.OCloexec);
        if (fd < 0)
        {
            int err = Errno.Last;
            throw new KvmException($"open {path}", err, err switch
            {
                Errno.ENOENT => "this host has no KVM: load kvm_intel/kvm_amd (or kvm_pvm) or enable virtualization in the firmware",
                Errno.EACCES or Errno.EPERM => $"no permission: run as root or add the user to the group that owns {path} (usually 'kvm')",
                _ => null,
            });
        }
        var kvm = new KvmSystem(new KvmSystemHandle(fd));
        int version = Sys.Ioctl(kvm._handle, KVM_GET_API_VERSION, 0, nameof(KVM_GET_API_VERSION));
        if (version != ExpectedApiVersion)
        {
            kvm.Dispose();
            throw new KvmException(nameof(KVM_GET_API_VERSION), 0, $"unsupported KVM API version {version}, expected {ExpectedApiVersion}");
        }
        return kvm;
    }

    /// <summary>Opens /dev/kvm as a probe; returns why it is unusable, or None.</summary>
    public static KvmUnavailableReason Probe(out string message, string path = DevicePath)
    {
        try
        {
            using var kvm = Open(path);
            message = "ok";
            return KvmUnavailableReason.None;
        }
        catch (KvmException e)
        {
            message = e.Message;
            return e.Errno switch
            {
                Errno.ENOENT => KvmUnavailableReason.Missing,
                Errno.EACCES or Errno.EPERM => KvmUnavailableReason.PermissionDenied,
                0 => KvmUnavailableReason.WrongApiVersion,
                _ => KvmUnavailableReason.OpenFailed,
            };
        }
    }

    /// <summary>
    /// True when the host's KVM is PVM (software virtualization, see docs/pvm.md). Read once: a jailed worker reads
    /// it before its pivot_root, after which /sys is out of its view.
    /// </summary>
    public static bool IsPvmHost { get; } = Directory.Exists("/sys/module/kvm_pvm");

    public int ApiVersion => Sys.Ioctl(_handle, KVM_GET_API_VERSION, 0, nameof(KVM_GET_API_VERSION));

    /// <summary>KVM_CHECK_EXTENSION: 0 when unsupported, otherwise a capability-specific value.</summary>
    public int CheckExtension(uint capability) => Sys.Ioctl(_handle, KVM_CHECK_EXTENSION, capability, nameof(KVM_CHECK_EXTENSION));

    public int VcpuMmapSize => Sys.Ioctl(_handle, KVM_GET_VCPU_MMAP_SIZE, 0, nameof(KVM_GET_VCPU_MMAP_SIZE));

    /// <summary>Recommended vCPU limit (KVM_CAP_NR_VCPUS), falling back to 4 as the API documents.</summary>
    public int RecommendedVcpus => CheckExtension(KvmConstants.KVM_CAP_NR_VCPUS) is > 0 and var n ? n : 4;

    /// <summary>Hard vCPU limit (KVM_CAP_MAX_VCPUS), falling back to the recommended limit.</summary>
    public int MaxVcpus => CheckExtension(KvmConstants.KVM_CAP_MAX_VCPUS) is > 0 and var n ? n : RecommendedVcpus;

    public kvm_cpuid_entry2[] GetSupportedCpuid()
    {
        int bytes = sizeof(kvm_cpuid2) + MaxCpuidEntries * sizeof(kvm_cpuid_entry2);
        byte* buf = stackalloc byte[bytes];
        new Span<byte>(buf, bytes).Clear();
        ((kvm_cpuid2*)buf)->nent = MaxCpuidEntries;
        Sys.Ioctl(_handle, KVM_GET_SUPPORTED_CPUID, buf, nameof(KVM_GET_SUPPORTED_CPUID));
        var n = (int)((kvm_cpuid2*)buf)->nent;
        return new ReadOnlySpan<kvm_cpuid_entry2>(buf + sizeof(kvm_cpuid2), n).ToArray();
    }

    /// <summary>KVM_GET_MSR_INDEX_LIST: the MSRs that can be saved and restored.</summary>
    public uint[] GetMsrIndexList()
    {
        kvm_msr_list probe = default;
        // The first call with nmsrs = 0 fails with E2BIG and reports the count.
        if (Ioctl.Invoke(_handle.Fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && Errno.Last is var err && err != Errno.E2BIG)
            throw new KvmException(nameof(KVM_GET_MSR_INDEX_LIST), err);
        int count = (int)probe.nmsrs;
        var buf = new uint[count + 1];
        fixed (uint* p = buf)
        {
            p[0] = (uint)count;
            Sys.Ioctl(_handle, KVM_GET_MSR_INDEX_LIST, p, nameof(KVM_GET_MSR_INDEX_LIST));
            return new ReadOnlySpan<uint>(p + 1, (int)p[0]).ToArray();
        }
    }

    public KvmVm CreateVm()
    {
        int fd = Sys.Ioctl(_handle, KVM_CREATE_VM, 0, nameof(KVM_CREATE_VM));
        return new KvmVm(this, new VmHandle(fd));
    }

    public void Dispose() => _handle.Dispose();
}
