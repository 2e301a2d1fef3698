namespace FireSharp.Cli;

/// <summary>
/// The exit codes of every <c>firesharp</c> command (README, "Exit codes"; <c>firesharp --help</c>). One table:
/// a script can tell "the daemon is not there" (3) from "no such VM" (4) from "you typed it wrong" (2) whatever
/// the command. <c>agent exec</c> and <c>vm exec</c> exit with the guest command's own code instead, and use this
/// table only for their own failures (the <c>firesharp</c>-prefixed line on stderr tells those apart).
/// </summary>
public static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Ok = 0;

    /// <summary>The operation failed (the daemon refused it in this state, the guest failed, a timeout, no permission...).</summary>
    public const int Failed = 1;

    /// <summary>Usage or bad input: a one-line error and a hint on stderr, never the whole help.</summary>
    public const int Usage = 2;

    /// <summary>The daemon (or, for <c>agent</c>, the guest agent) cannot be reached.</summary>
    public const int Unreachable = 3;

    /// <summary>The VM, function or snapshot named does not exist.</summary>
    public const int NotFound = 4;

    /// <summary>This host cannot run VMs (no usable /dev/kvm).</summary>
    public const int NoKvm = 5;

    /// <summary>The table as the help epilog and the README show it.</summary>
    public const string Table =
        "Exit codes (every command):\n" +
        "  0  ok\n" +
        "  1  the operation failed\n" +
        "  2  usage or bad input (one line and a hint on stderr)\n" +
        "  3  daemon unreachable (agent: the guest agent unreachable)\n" +
        "  4  not found\n" +
        "  5  this host cannot run VMs (no usable /dev/kvm)\n" +
        "  agent exec and vm exec exit with the guest command's own code (128+N for signal N).";
}
