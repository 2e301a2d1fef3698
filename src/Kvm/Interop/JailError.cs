namespace FireSharp.Kvm.Interop;

/// <summary>A jail set-up step (a mount, an id change, a capability drop...) that the kernel refused.</summary>
public sealed class JailSetupException : Exception
{
    public JailSetupException(string step, int errno)
        : base($"{step}: {Errno.Text(errno)}")
    {
        Step = step;
        ErrorNumber = errno;
    }

    public JailSetupException() : base("jail set-up failed") { Step = ""; }

    public JailSetupException(string message) : base(message) { Step = ""; }

    public JailSetupException(string message, Exception inner) : base(message, inner) { Step = ""; }

    /// <summary>What was being done ("pivot_root(/srv/jail/a/root)").</summary>
    public string Step { get; }

    /// <summary>The errno the kernel returned (0 when not from a syscall).</summary>
    public int ErrorNumber { get; }

    /// <summary>Throws for a -1 return of a P/Invoke made with SetLastError.</summary>
    internal static void Check(int result, string step)
    {
        if (result == -1) throw new JailSetupException(step, Errno.Last);
    }
}
