using FireSharp.Pool;
using FireSharp.Daemon.Functions.Lambda;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace FireSharp.Daemon.Functions;

using PoolStats = FireSharp.Pool.FunctionStats;
using ProtoStats = FireSharp.Proto.V1.FunctionStats;
using ProtoState = FireSharp.Proto.V1.FunctionState;
using ProtoStartKind = FireSharp.Proto.V1.StartKind;
using PoolStartKind = FireSharp.Pool.StartKind;
using PoolState = FireSharp.Pool.FunctionState;

/// <summary>
/// Between the pool's types and function.proto's: stored specs to pool definitions, and pool results, infos and
/// stats to API messages. An invocation's result is shaped as Lambda answers (<see cref="LambdaInvokeResponse"/>).
/// </summary>
public static class FunctionProto
{
    /// <summary>The ARN the API shows for a function (the runtime inside the VM sees the factory's <see cref="LambdaIdentity"/>).</summary>
    private static readonly LambdaIdentity ApiIdentity = new(Partition: "firesharp");

    public static string Arn(string name) => ApiIdentity.FunctionArn(name);

    /// <summary>The pool's result as Lambda shapes it (status code, error body), with the pool's figures.</summary>
    public static InvokeResponse Invoke(InvokeResult r)
    {
        var lambda = LambdaInvokeResponse.From(r);
        return new InvokeResponse
        {
            StatusCode = lambda.StatusCode,
            Payload = ByteString.CopyFrom(lambda.Payload.Span),
            FunctionError = lambda.FunctionError ?? "",
            ErrorType = lambda.ErrorType ?? "",
            LogTail = r.LogTail,
            RequestId = r.RequestId,
            InitDurationMs = r.InitDuration?.TotalMilliseconds ?? 0,
            DurationMs = r.Duration.TotalMilliseconds,
            BilledDurationMs = (long)Math.Ceiling(r.BilledDuration.TotalMilliseconds),
            MaxMemoryUsedMib = r.MaxMemoryUsedMib,
            StartKind = r.Status == InvokeStatus.Ran ? r.StartKind switch
            {
                PoolStartKind.Warm => ProtoStartKind.Warm,
                PoolStartKind.SnapshotCold => ProtoStartKind.SnapshotCold,
                PoolStartKind.BootCold => ProtoStartKind.BootCold,
                _ => ProtoStartKind.Unspecified,
            } : ProtoStartKind.Unspecified,
            GbSeconds = (double)r.GbSeconds,
            Version = r.Version ?? "",
        };
    }

    /// <summary>The pool's view of a stored spec (the pool assigns the version).</summary>
    public static FunctionDefinition Definition(FunctionSpec s) => new()
    {
        Name = s.Name,
        Version = "0",
        KernelPath = s.Image.KernelPath,
        RootfsPath = s.Image.RootfsPath,
        LayerPaths = [.. s.Layers],
        CodeImagePath = s.Code.ImagePath,
        Handler = s.Handler,
        Environment = new Dictionary<string, string>(s.Environment, StringComparer.Ordinal),
        MemoryMib = s.MemoryMib,
        Vcpus = s.Vcpus,
        Timeout = TimeSpan.FromSeconds(s.TimeoutSeconds),
        SnapshotStart = s.SnapshotStart,
    };

    /// <summary>A stored record with the pool's live view of it (version, state, concurrency, stats).</summary>
    public static Function Describe(Function record, FunctionInfo info)
    {
        var f = record.Clone();
        f.Version = info.Definition.Version;
        f.State = info.State == PoolState.Deleting ? ProtoState.Deleting : ProtoState.Active;
        if (info.ReservedConcurrency is int r) f.ReservedConcurrency = r;
        else f.ClearReservedConcurrency();
        f.ProvisionedConcurrency = info.ProvisionedConcurrency;
        f.LastModified = Timestamp.FromDateTimeOffset(info.LastModified);
        f.Stats = Stats(info.Stats);
        return f;
    }

    private static ProtoStats Stats(PoolStats s) => new()
    {
        ConcurrentExecutions = s.InFlight,
        IdleVms = s.IdleVms,
        TotalVms = s.IdleVms + s.BusyVms + s.CreatingVms,
        Invocations = s.Invocations,
        Errors = s.Errors,
        Throttles = s.Throttles,
        WarmStarts = s.WarmStarts,
        SnapshotColdStarts = s.SnapshotColdStarts,
        BootColdStarts = s.BootColdStarts,
        GbSeconds = (double)s.GbSeconds,
    };
}
