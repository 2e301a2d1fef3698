using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// The <c>firesharp-vmm</c> process confining itself (<c>--seccomp</c>): installs <see cref="WorkerSeccomp"/> and, for
/// tests only (<c>--seccomp-test-trigger</c>, set by the daemon's SeccompTestTrigger option, never by a guest or an
/// API client), arms SIGUSR2 to make one forbidden call so that a test can watch the filter kill the worker.
/// </summary>
internal static partial class ConfineWorker
{
    private const int SigUsr2 = 12;
    private static PosixSignalRegistration? s_trigger;

    public static void Install(ILogger logger, string? testTrigger)
    {
        var took = WorkerSeccomp.Install();
        Installed(logger, WorkerSeccomp.Rules.Count, took.TotalMilliseconds);
        if (testTrigger is null) return;
        s_trigger = PosixSignalRegistration.Create((PosixSignal)SigUsr2, ctx =>
        {
            ctx.Cancel = true;
            TriggerFired(logger, testTrigger);
            Fire(testTrigger);
        });
    }

    /// <summary>Makes the forbidden call: the filter kills the process before it returns.</summary>
    private static void Fire(string kind)
    {
        _ = kind == "execve" ? Seccomp.ExecveForTest("/bin/true") : Seccomp.InetSocketForTest();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "worker: seccomp filter installed on every thread ({Rules} rules) in {Ms:F2} ms")]
    private static partial void Installed(ILogger logger, int rules, double ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "worker: seccomp test trigger: calling {Kind} (the filter must kill this process)")]
    private static partial void TriggerFired(ILogger logger, string kind);
}
