using Microsoft.Extensions.Logging;

namespace FireSharp.Snapshot;

/// <summary>Log events of snapshot capture and restore, with stable ids (2000-2019).</summary>
internal static partial class SnapshotLog
{
    [LoggerMessage(EventId = 2000, Level = LogLevel.Debug,
        Message = "snapshot: vcpu {Vcpu}: {Read} of {Listed} MSRs readable, XSAVE {Xsave}, XCRs {Xcrs}, debug registers {Debug}, LAPIC {Lapic}, MP state {Mp}")]
    public static partial void VcpuCaptured(ILogger logger, int vcpu, int read, int listed, bool xsave, bool xcrs, bool debug, bool lapic, string mp);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Information,
        Message = "snapshot {Dir}: {Written} KiB of {Total} MiB guest memory written, state {State} bytes, vCPUs paused {Paused:F1} ms")]
    public static partial void Written(ILogger logger, string dir, ulong written, ulong total, int state, double paused);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Error, Message = "snapshot: could not remove the partial snapshot {Dir}: {Error}")]
    public static partial void PartialNotRemoved(ILogger logger, string dir, string error);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Information,
        Message = "restored {Dir} ({Mem} MiB, {Vcpus} vCPU) in {Total:F2} ms: state read {Read:F2} ms, VM created {Create:F2} ms, state set {Set:F2} ms, vCPU threads {Threads:F2} ms; {Run}")]
    public static partial void Restored(ILogger logger, string dir, ulong mem, int vcpus, double total, double read, double create, double set,
        double threads, string run);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Warning,
        Message = "vcpu {Vcpu}: snapshot has XSAVE state but this host lacks KVM_CAP_XSAVE; restored FPU/SSE state only")]
    public static partial void NoXsaveOnHost(ILogger logger, int vcpu);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Warning, Message = "vcpu {Vcpu}: KVM refused saved MSR 0x{Msr:x} = 0x{Value:x}")]
    public static partial void MsrRefused(ILogger logger, int vcpu, uint msr, ulong value);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Warning, Message = "snapshot: {What} failed ({Error}); that state is not saved")]
    public static partial void StateNotSaved(ILogger logger, string what, string error);
}
