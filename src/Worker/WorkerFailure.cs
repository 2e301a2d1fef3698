using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Vm;

namespace FireSharp.Worker;

/// <summary>A request that failed with a typed worker error: its code and the API field at fault cross the socket as they are.</summary>
internal sealed class WorkerFailure(WorkerErrorCode code, string field, string message) : Exception(message)
{
    public WorkerErrorCode Code { get; } = code;

    /// <summary>The request field at fault in the public API's terms ("spec.machine.mem_mib"), or empty.</summary>
    public string Field { get; } = field;

    public WorkerError ToWire() => new() { Code = Code, Field = Field, Message = Message };
}

/// <summary>
/// How the VMM's failures become worker errors. Every decision is taken from an exception's typed reason,
/// field or errno; no message is ever looked into (messages only travel on, for a human).
/// </summary>
internal static class WorkerFailures
{
    public const string MemMibField = "spec.machine.mem_mib", VcpusField = "spec.machine.vcpus";
    public const string KernelPathField = "spec.kernel.path", InitrdPathField = "spec.kernel.initrd_path", CmdlineField = "spec.kernel.cmdline";

    /// <summary>A failure to build a machine (CreateMachine) as a worker error; null for an exception this does not know (a bug).</summary>
    public static WorkerFailure? ForCreate(Exception e) => e switch
    {
        MachineConfigException m => new WorkerFailure(
            m.IsHostLimit ? WorkerErrorCode.WorkerErrorResourceExhausted : WorkerErrorCode.WorkerErrorInvalidArgument,
            m.Field == MachineConfigException.VcpusField ? VcpusField : MemMibField, m.Detail),
        DeviceConfigException d => new WorkerFailure(MachineSpecs.Code(d), MachineSpecs.ApiField(d.Field), d.Detail),
        BootException b => new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, BootField(b), b.Message),
        KvmException k => ForKvm(k, MemMibField),
        GuestMemoryMapException g => ForErrno(g.Errno, g.Message, MemMibField),
        _ => null,
    };

    /// <summary>A failure to restore a snapshot (RestoreMachine) as a worker error; null for an exception this does not know.</summary>
    public static WorkerFailure? ForRestore(Exception e) => e switch
    {
        SnapshotException s => ForSnapshot(s),
        KvmException k => ForKvm(k, "dir"),
        GuestMemoryMapException g => ForErrno(g.Errno, g.Message, "dir"),
        _ => null,
    };

    /// <summary>
    /// A KVM failure: out of memory (ENOMEM) is the host's limit, charged to <paramref name="memoryField"/>;
    /// anything else means KVM is unusable.
    /// </summary>
    public static WorkerFailure ForKvm(KvmException e, string memoryField) => ForErrno(e.Errno, e.Message, memoryField);

    /// <summary>A host refusal by errno (a KVM call, or the guest memory mapping): as <see cref="ForKvm"/>.</summary>
    private static WorkerFailure ForErrno(int errno, string message, string memoryField) => errno == Errno.ENOMEM
        ? new WorkerFailure(WorkerErrorCode.WorkerErrorResourceExhausted, memoryField, message)
        : new WorkerFailure(WorkerErrorCode.WorkerErrorUnavailable, "", message);

    /// <summary>
    /// A snapshot failure: each <see cref="SnapshotErrorReason"/> is one code, and the field at fault is the
    /// request's directory (the daemon maps codes to API kinds, see WorkerClient.ToException).
    /// </summary>
    public static WorkerFailure ForSnapshot(SnapshotException e)
    {
        var (code, field) = e.Reason switch
        {
            SnapshotErrorReason.DirectoryExists => (WorkerErrorCode.WorkerErrorAlreadyExists, "dir"),
            SnapshotErrorReason.NotFound => (WorkerErrorCode.WorkerErrorNotFound, "dir"),
            SnapshotErrorReason.Corrupt or SnapshotErrorReason.Truncated or SnapshotErrorReason.UnsupportedVersion
                or SnapshotErrorReason.ChecksumMismatch or SnapshotErrorReason.MemoryFileSizeMismatch
                or SnapshotErrorReason.DeviceSetMismatch or SnapshotErrorReason.KvmStateRejected or SnapshotErrorReason.BaseMismatch
            or SnapshotErrorReason.Unauthenticated
                => (WorkerErrorCode.WorkerErrorInvalidArgument, "dir"),
            SnapshotErrorReason.InvalidVmState => (WorkerErrorCode.WorkerErrorWrongState, ""),
            SnapshotErrorReason.DiskFull => (WorkerErrorCode.WorkerErrorResourceExhausted, "dir"),
            _ => (WorkerErrorCode.WorkerErrorUnavailable, ""), // IoError: the host failed us
        };
        return new WorkerFailure(code, field, e.Message);
    }

    internal static string BootField(BootException e) => e.Reason switch
    {
        BootErrorReason.CommandLineTooLong or BootErrorReason.CommandLineInvalid => CmdlineField,
        BootErrorReason.MemoryTooSmall or BootErrorReason.SegmentOutsideMemory => MemMibField,
        BootErrorReason.InitrdDoesNotFit or BootErrorReason.InitrdEmpty => InitrdPathField,
        _ when e.File == BootFile.Initrd => InitrdPathField,
        _ => KernelPathField,
    };

    /// <summary>A VMM exit kind as it crosses the worker protocol (one value each).</summary>
    public static MachineExitKind ToWire(VmExitKind kind) => kind switch
    {
        VmExitKind.Reset => MachineExitKind.Reset,
        VmExitKind.PowerOff => MachineExitKind.PowerOff,
        VmExitKind.Stopped => MachineExitKind.Stopped,
        VmExitKind.Halt => MachineExitKind.Halt,
        VmExitKind.TripleFault => MachineExitKind.TripleFault,
        VmExitKind.FailEntry => MachineExitKind.FailEntry,
        VmExitKind.InternalError => MachineExitKind.InternalError,
        VmExitKind.GuestCrash => MachineExitKind.GuestCrash,
        _ => MachineExitKind.VmmError,
    };
}
