using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;

namespace FireSharp.Kvm;

/// <summary>
/// A file descriptor owned by the KVM layer (/dev/kvm, a VM or a vCPU). Being a SafeHandle it can
/// neither leak nor be closed twice, and it is not closed while an ioctl on it is in flight.
/// </summary>
public abstract class KvmFd : SafeHandle
{
    protected KvmFd(int fd) : base(invalidHandleValue: -1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;

    /// <summary>The raw descriptor. Callers must keep this object alive while they use it.</summary>
    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Descriptors.Close((int)handle) == 0;
}

/// <summary>The /dev/kvm system descriptor.</summary>
public sealed class KvmSystemHandle(int fd) : KvmFd(fd);

/// <summary>A VM descriptor from KVM_CREATE_VM.</summary>
public sealed class VmHandle(int fd) : KvmFd(fd);

/// <summary>A vCPU descriptor from KVM_CREATE_VCPU.</summary>
public sealed class VcpuHandle(int fd) : KvmFd(fd);

internal static unsafe class Sys
{
    /// <summary>
    /// ioctl with EINTR retried, throwing <see cref="KvmException"/> on failure. Not for KVM_RUN,
    /// whose EINTR is a meaningful result.
    /// </summary>
    public static int Ioctl(KvmFd fd, uint request, void* arg, string name)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            while (true)
            {
                int rc = Interop.Ioctl.Invoke(fd.Fd, request, arg);
                if (rc >= 0) return rc;
                int err = Errno.Last;
                if (err != Errno.EINTR) throw new KvmException(name, err);
            }
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    public static int Ioctl(KvmFd fd, uint request, ulong arg, string name) => Ioctl(fd, request, (void*)arg, name);
}
