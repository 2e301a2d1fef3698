using FireSharp.Kvm.Interop;

namespace FireSharp.Kvm;

/// <summary>
/// A KVM ioctl (or the syscall around it) failed. The one place where errno becomes an exception:
/// the message names the operation and the errno text, e.g. "KVM_CREATE_VCPU failed: EINVAL (Invalid argument)".
/// </summary>
public sealed class KvmException(string operation, int errno, string? detail = null)
    : Exception($"{operation} failed: {Interop.Errno.Text(errno)}{(detail is null ? "" : " — " + detail)}")
{
    public string Operation { get; } = operation;
    public int Errno { get; } = errno;
}
