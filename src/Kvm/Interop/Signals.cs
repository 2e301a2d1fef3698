using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The signal used to kick a vCPU thread out of KVM_RUN. The .NET runtime uses SIGRTMIN itself (thread
/// activation for GC suspension), so FireSharp takes SIGRTMIN+6. Its handler must be native code: a
/// signal can interrupt a thread that is running managed code, where an [UnmanagedCallersOnly] handler
/// would fail fast. So the runtime's own native handler is used, through PosixSignalRegistration with a
/// raw signal number (documented as supported); it only records the signal. KVM_RUN returns EINTR when
/// a signal is pending (never restarted, whatever SA_RESTART says), and kvm_run.immediate_exit is set
/// before sending it so a vCPU that is between two KVM_RUN calls does not miss the kick.
/// </summary>
public static partial class Signals
{
    private static int s_kickSignal;
    private static PosixSignalRegistration? s_registration;
    private static readonly Lock s_lock = new();

    [LibraryImport("libc.so.6", EntryPoint = "pthread_self")]
    private static partial nuint pthread_self();

    /// <summary>The calling thread's pthread_t (the target of <see cref="Kick"/>).</summary>
    public static nuint PthreadSelf() => pthread_self();

    [LibraryImport("libc.so.6", EntryPoint = "pthread_kill")]
    private static partial int pthread_kill(nuint thread, int sig);

    [LibraryImport("libc.so.6", EntryPoint = "__libc_current_sigrtmin")]
    private static partial int CurrentSigRtMin();

    /// <summary>Installs the kick handler once per process and returns the signal number.</summary>
    public static int EnsureKickHandler()
    {
        lock (s_lock)
        {
            if (s_kickSignal != 0) return s_kickSignal;
            int sig = CurrentSigRtMin() + 6;
            // Cancel = true: the kick is not a request to terminate (the default action of an RT signal).
            s_registration = PosixSignalRegistration.Create((PosixSignal)sig, static ctx => ctx.Cancel = true);
            s_kickSignal = sig;
            return sig;
        }
    }

    /// <summary>Sends the kick signal to a thread. ESRCH (thread already gone) is not an error.</summary>
    public static void Kick(nuint thread) => _ = pthread_kill(thread, EnsureKickHandler());
}
