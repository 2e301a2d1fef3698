using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The signal used to kick a vCPU thread out of KVM_RUN. The .NET runtime uses SIGRTMIN itself (thread
/// activation for GC suspension), so FireSharp takes SIGRTMIN+6, installs a no-op handler without
/// SA_RESTART (so KVM_RUN returns EINTR), and sets kvm_run.immediate_exit before sending it so a vCPU
/// that is between two KVM_RUN calls does not miss the kick.
/// </summary>
public static unsafe partial class Signals
{
    private static int s_kickSignal;
    private static readonly Lock s_lock = new();

    // glibc's userland struct sigaction on x86_64: handler, 128-byte mask, flags, restorer.
    [StructLayout(LayoutKind.Sequential)]
    private struct SigAction
    {
        public nint sa_handler;
        public fixed ulong sa_mask[16];
        public int sa_flags;
        public nint sa_restorer;
    }

    [LibraryImport("libc", EntryPoint = "sigaction", SetLastError = true)]
    private static partial int sigaction(int signum, SigAction* act, SigAction* oldact);

    [LibraryImport("libc", EntryPoint = "pthread_self")]
    public static partial nuint PthreadSelf();

    [LibraryImport("libc", EntryPoint = "pthread_kill")]
    private static partial int pthread_kill(nuint thread, int sig);

    [LibraryImport("libc", EntryPoint = "__libc_current_sigrtmin")]
    private static partial int CurrentSigRtMin();

    [UnmanagedCallersOnly]
    private static void OnKick(int signal) { }

    /// <summary>Installs the kick handler once per process and returns the signal number.</summary>
    public static int EnsureKickHandler()
    {
        lock (s_lock)
        {
            if (s_kickSignal != 0) return s_kickSignal;
            int sig = CurrentSigRtMin() + 6;
            SigAction act = default;
            act.sa_handler = (nint)(delegate* unmanaged<int, void>)&OnKick;
            act.sa_flags = 0; // deliberately not SA_RESTART
            if (sigaction(sig, &act, null) != 0)
                throw new KvmException("sigaction(vcpu kick)", Marshal.GetLastPInvokeError());
            s_kickSignal = sig;
            return sig;
        }
    }

    /// <summary>Sends the kick signal to a thread. ESRCH (thread already gone) is not an error.</summary>
    public static void Kick(nuint thread) => pthread_kill(thread, EnsureKickHandler());
}
