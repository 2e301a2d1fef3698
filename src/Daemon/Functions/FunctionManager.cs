using FireSharp.Kvm.Files;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Functions;

using ProtoState = FireSharp.Proto.V1.FunctionState;
using ProtoInvocationType = FireSharp.Proto.V1.InvocationType;
using PoolInvocationType = FireSharp.Pool.InvocationType;

/// <summary>
/// The daemon's functions: validates API requests (Lambda's limits, typed errors naming the field), packs code
/// directories, drives <see cref="FunctionPool"/> and keeps the records on disk (<see cref="FunctionStore"/>) so
/// that a restarted daemon has the same functions (with the same reserved and provisioned concurrency).
/// </summary>
/// <remarks>
/// Every path is asynchronous: the records' lock is awaited (one registry change at a time; packing happens
/// outside it), never waited on with a blocked thread.
/// </remarks>
public sealed partial class FunctionManager(FunctionPool pool, FunctionStore store, FunctionRecords records, DaemonOptions options, HostLimits host, ILogger<FunctionManager> logger)
{

    public FunctionPool Pool => pool;

    /// <summary>Re-registers the functions of the state directory with the pool (at daemon start).</summary>
    public async Task LoadAsync(CancellationToken ct)
    {
        foreach (var record in store.LoadAll())
        {
            string name = record.Spec.Name;
            try
            {
                var info = await pool.CreateFunctionAsync(FunctionProto.Definition(record.Spec), ct).ConfigureAwait(false);
                if (record.HasReservedConcurrency) pool.PutReservedConcurrency(name, record.ReservedConcurrency);
                if (record.ProvisionedConcurrency > 0) pool.PutProvisionedConcurrency(name, record.ProvisionedConcurrency);
                record.Version = info.Definition.Version;
                record.State = ProtoState.Active;
                using (var r = await records.LockAsync(ct).ConfigureAwait(false)) r.Set(record);
                store.DeletePackedCodeExcept(name, record.CodeSourceDirectory.Length > 0 ? record.Spec.Code.ImagePath : null);
                LogLoaded(logger, name);
            }
            catch (Exception e) when (e is FunctionPoolException or VmApiException)
            {
                LogLoadFailed(logger, name, e.Message);
            }
        }
    }

    // ---------------------------------------------------------------- registry

    public async Task<Function> CreateAsync(CreateFunctionRequest request, CancellationToken ct)
    {
        var spec = request.Spec ?? throw VmApiException.Invalid("spec", "is required");
        FunctionValidator.ValidateName(spec.Name, "spec.name");
        var normalized = Normalize(spec, "spec");
        using (var r = await records.LockAsync(ct).ConfigureAwait(false))
        {
            if (r.Contains(spec.Name)) throw new VmApiException(VmErrorKind.AlreadyExists, "spec.name", $"a function named '{spec.Name}' exists");
        }

        string? packedFrom = null;
        if (spec.Code.SourceCase == FunctionCode.SourceOneofCase.Directory)
        {
            packedFrom = spec.Code.Directory;
            normalized.Code = new FunctionCode { ImagePath = await PackAsync(spec.Name, packedFrom, "spec.code.directory", ct).ConfigureAwait(false) };
        }
        using (var r = await records.LockAsync(CancellationToken.None).ConfigureAwait(false))
        {
            FunctionInfo info;
            try
            {
                info = await pool.CreateFunctionAsync(FunctionProto.Definition(normalized), CancellationToken.None).ConfigureAwait(false);
            }
            catch (FunctionPoolException e)
            {
                if (packedFrom is not null && !r.Contains(spec.Name)) store.Delete(spec.Name);
                throw FunctionErrors.From(e, "spec.name");
            }
            var now = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow);
            var record = new Function
            {
                Spec = normalized,
                Version = info.Definition.Version,
                Arn = FunctionProto.Arn(spec.Name),
                State = ProtoState.Active,
                CreatedAt = now,
                LastModified = now,
                CodeSourceDirectory = packedFrom ?? "",
            };
            r.Set(record);
            store.Save(record);
            LogCreated(logger, spec.Name, normalized.MemoryMib, normalized.Vcpus);
            return FunctionProto.Describe(record, info);
        }
    }

    public async Task<Function> UpdateConfigurationAsync(UpdateFunctionConfigurationRequest request, CancellationToken ct)
    {
        FunctionValidator.ValidateName(request.Name, "name");
        using (var r = await records.LockAsync(ct).ConfigureAwait(false))
        {
            var record = Find(r, request.Name);
            var spec = record.Spec.Clone();
            if (request.Image is { } image)
            {
                if (image.KernelPath.Length > 0) { SpecValidator.ValidateFile(image.KernelPath, "image.kernel_path", required: true); CheckPaths(image.KernelPath, "", null, null, "image"); spec.Image.KernelPath = image.KernelPath; }
                if (image.RootfsPath.Length > 0) { SpecValidator.ValidateFile(image.RootfsPath, "image.rootfs_path", required: true); CheckPaths("", image.RootfsPath, null, null, "image"); spec.Image.RootfsPath = image.RootfsPath; }
            }
            if (request.Handler.Length > 0) { FunctionValidator.ValidateHandler(request.Handler, "handler"); spec.Handler = request.Handler; }
            if (request.ReplaceEnvironment) spec.Environment.Clear();
            foreach (var (k, v) in request.Environment) spec.Environment[k] = v;
            FunctionValidator.ValidateEnvironment(spec.Environment, "environment");
            if (request.MemoryMib != 0) spec.MemoryMib = FunctionValidator.ValidateMemory(request.MemoryMib, "memory_mib");
            if (request.Vcpus != 0) spec.Vcpus = FunctionValidator.ValidateVcpus(request.Vcpus, spec.MemoryMib, host, "vcpus");
            else if (request.MemoryMib != 0) spec.Vcpus = FunctionValidator.ValidateVcpus(0, spec.MemoryMib, host, "vcpus");
            if (request.TimeoutSeconds != 0) spec.TimeoutSeconds = FunctionValidator.ValidateTimeout(request.TimeoutSeconds, "timeout_seconds");
            if (request.SetSnapshotStart) spec.SnapshotStart = request.SnapshotStartValue;
            return await ApplyAsync(record, spec, record.CodeSourceDirectory).ConfigureAwait(false);
        }
    }

    public async Task<Function> UpdateCodeAsync(UpdateFunctionCodeRequest request, CancellationToken ct)
    {
        FunctionValidator.ValidateName(request.Name, "name");
        FunctionValidator.ValidateCode(request.Code, "code");
        if (request.ReplaceLayers) FunctionValidator.ValidateLayers(request.Layers, "layers");
        CheckPaths("", "", request.ReplaceLayers ? request.Layers : null, request.Code, null);
        using (var r = await records.LockAsync(ct).ConfigureAwait(false)) Find(r, request.Name);

        string? packedFrom = null, image = request.Code.ImagePath;
        if (request.Code.SourceCase == FunctionCode.SourceOneofCase.Directory)
        {
            packedFrom = request.Code.Directory;
            image = await PackAsync(request.Name, packedFrom, "code.directory", ct).ConfigureAwait(false);
        }
        using (var r = await records.LockAsync(CancellationToken.None).ConfigureAwait(false))
        {
            var record = Find(r, request.Name);
            var spec = record.Spec.Clone();
            spec.Code = new FunctionCode { ImagePath = image };
            if (request.ReplaceLayers)
            {
                spec.Layers.Clear();
                spec.Layers.AddRange(request.Layers);
            }
            return await ApplyAsync(record, spec, packedFrom ?? "").ConfigureAwait(false);
        }
    }

    /// <summary>Under the records' lock: a new version in the pool, then the record.</summary>
    private async Task<Function> ApplyAsync(Function record, FunctionSpec spec, string codeSourceDirectory)
    {
        var def = FunctionProto.Definition(spec);
        FunctionInfo info;
        try
        {
            info = await pool.UpdateFunctionAsync(spec.Name, _ => def, CancellationToken.None).ConfigureAwait(false);
        }
        catch (FunctionPoolException e)
        {
            throw FunctionErrors.From(e);
        }
        record.Spec = spec;
        record.Version = info.Definition.Version;
        record.LastModified = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow);
        record.CodeSourceDirectory = codeSourceDirectory;
        store.Save(record);
        LogUpdated(logger, spec.Name, record.Version);
        return FunctionProto.Describe(record, info);
    }

    public async Task DeleteAsync(string name, CancellationToken ct)
    {
        FunctionValidator.ValidateName(name, "name");
        using (var r = await records.LockAsync(ct).ConfigureAwait(false)) Find(r, name).State = ProtoState.Deleting;
        try
        {
            await pool.DeleteFunctionAsync(name, ct).ConfigureAwait(false);
        }
        catch (FunctionPoolException e)
        {
            throw FunctionErrors.From(e);
        }
        using (var r = await records.LockAsync(CancellationToken.None).ConfigureAwait(false))
        {
            r.Remove(name);
            store.Delete(name);
        }
        LogDeleted(logger, name);
    }

    public async Task<Function> GetAsync(string name, CancellationToken ct)
    {
        FunctionValidator.ValidateName(name, "name");
        Function record;
        using (var r = await records.LockAsync(ct).ConfigureAwait(false)) record = Find(r, name).Clone();
        try
        {
            return FunctionProto.Describe(record, pool.GetFunction(name));
        }
        catch (FunctionPoolException e)
        {
            throw FunctionErrors.From(e);
        }
    }

    public async Task<ListFunctionsResponse> ListAsync(CancellationToken ct)
    {
        var infos = pool.ListFunctions().ToDictionary(i => i.Definition.Name, StringComparer.Ordinal);
        List<Function> all;
        using (var held = await records.LockAsync(ct).ConfigureAwait(false)) all = held.CloneAll();
        var response = new ListFunctionsResponse();
        foreach (var r in all.OrderBy(r => r.Spec.Name, StringComparer.Ordinal))
            if (infos.TryGetValue(r.Spec.Name, out var info)) response.Functions.Add(FunctionProto.Describe(r, info));
        return response;
    }

    public async Task<Function> PutConcurrencyAsync(PutFunctionConcurrencyRequest request, CancellationToken ct)
    {
        FunctionValidator.ValidateName(request.Name, "name");
        if (!request.Remove && request.ReservedConcurrentExecutions < 0)
            throw VmApiException.Invalid("reserved_concurrent_executions", $"is {request.ReservedConcurrentExecutions}; must be at least 0");
        using (var r = await records.LockAsync(ct).ConfigureAwait(false))
        {
            var record = Find(r, request.Name);
            FunctionInfo info;
            try
            {
                info = pool.PutReservedConcurrency(request.Name, request.Remove ? null : request.ReservedConcurrentExecutions);
            }
            catch (FunctionPoolException e)
            {
                throw FunctionErrors.From(e);
            }
            if (request.Remove) record.ClearReservedConcurrency();
            else record.ReservedConcurrency = request.ReservedConcurrentExecutions;
            store.Save(record);
            return FunctionProto.Describe(record, info);
        }
    }

    public async Task<Function> PutProvisionedAsync(PutProvisionedConcurrencyRequest request, CancellationToken ct)
    {
        FunctionValidator.ValidateName(request.Name, "name");
        if (request.ProvisionedConcurrentExecutions < 0)
            throw VmApiException.Invalid("provisioned_concurrent_executions", $"is {request.ProvisionedConcurrentExecutions}; must be at least 0");
        using (var r = await records.LockAsync(ct).ConfigureAwait(false))
        {
            var record = Find(r, request.Name);
            FunctionInfo info;
            try
            {
                info = pool.PutProvisionedConcurrency(request.Name, request.ProvisionedConcurrentExecutions);
            }
            catch (FunctionPoolException e)
            {
                throw FunctionErrors.From(e);
            }
            record.ProvisionedConcurrency = request.ProvisionedConcurrentExecutions;
            store.Save(record);
            return FunctionProto.Describe(record, info);
        }
    }

    public Proto.V1.AccountSettings GetAccountSettings()
    {
        var a = pool.GetAccountSettings();
        int vms = pool.ListFunctions().Sum(f => f.Stats.IdleVms + f.Stats.BusyVms + f.Stats.CreatingVms);
        return new Proto.V1.AccountSettings
        {
            ConcurrentExecutionsLimit = a.ConcurrencyLimit,
            UnreservedConcurrentExecutions = a.UnreservedConcurrency,
            ConcurrentExecutions = a.InFlight,
            FunctionCount = a.FunctionCount,
            TotalVms = vms,
        };
    }

    // ---------------------------------------------------------------- invoke

    public async Task<InvokeResponse> InvokeAsync(InvokeRequest request, CancellationToken ct)
    {
        FunctionValidator.ValidateName(request.Name, "name");
        var type = request.InvocationType switch
        {
            ProtoInvocationType.Unspecified or ProtoInvocationType.RequestResponse => PoolInvocationType.RequestResponse,
            ProtoInvocationType.Event => PoolInvocationType.Event,
            ProtoInvocationType.DryRun => PoolInvocationType.DryRun,
            _ => throw VmApiException.Invalid("invocation_type", $"{(int)request.InvocationType} is not an invocation type"),
        };
        FunctionValidator.ValidatePayload(request.Payload.Length, "payload");
        InvokeResult result;
        try
        {
            result = await pool.InvokeAsync(request.Name, request.Payload.Memory, type, ct).ConfigureAwait(false);
        }
        catch (FunctionThrottledException t)
        {
            throw FunctionErrors.Throttled(t);
        }
        catch (FunctionPoolException e)
        {
            throw FunctionErrors.From(e);
        }
        catch (FunctionInitException e)
        {
            throw VmApiException.Unavailable($"the function's runtime could not start ({e.ErrorType}): {e.Message}");
        }
        return FunctionProto.Invoke(result);
    }

    // ---------------------------------------------------------------- helpers

    private static Function Find(FunctionRecords.Access records, string name) =>
        records.Find(name) ?? throw FunctionErrors.NotFound(name);

    /// <summary>
    /// The host paths a function names, under the path policy (docs/security.md): kernel, rootfs, layers, and the
    /// code image or directory (a code directory is packed into an image its guest reads, so it must be allowed).
    /// Empty paths are skipped; <paramref name="prefix"/> is the fields' parent ("spec", "image" or none).
    /// </summary>
    private void CheckPaths(string kernel, string rootfs, Google.Protobuf.Collections.RepeatedField<string>? layers, FunctionCode? code, string? prefix)
    {
        string F(string name) => prefix is null ? name : $"{prefix}.{name}";
        string image = prefix == "image" ? "" : "image.";
        if (kernel.Length > 0) _paths.Check(kernel, PathKind.File, F(image + "kernel_path"));
        if (rootfs.Length > 0) _paths.Check(rootfs, PathKind.Drive, F(image + "rootfs_path"));
        for (int i = 0; i < (layers?.Count ?? 0); i++) _paths.Check(layers![i], PathKind.Drive, F($"layers[{i}]"));
        if (code?.SourceCase == FunctionCode.SourceOneofCase.ImagePath) _paths.Check(code.ImagePath, PathKind.Drive, F("code.image_path"));
        if (code?.SourceCase == FunctionCode.SourceOneofCase.Directory) _paths.Check(code.Directory, PathKind.Directory, F("code.directory"));
    }

    private readonly HostPaths _paths = new(options);

    /// <summary>Packs a code directory, read through the fd the path policy opened (never again by its path).</summary>
    private async Task<string> PackAsync(string name, string directory, string field, CancellationToken ct)
    {
        using var source = _paths.Open(directory, PathKind.Directory, field);
        return await store.PackCodeAsync(name, NewToken(), source, directory, field, ct).ConfigureAwait(false);
    }

    /// <summary>Checks a create spec and fills in the defaults (image, memory, vCPUs, timeout).</summary>
    private FunctionSpec Normalize(FunctionSpec spec, string prefix)
    {
        var s = spec.Clone();
        s.Image ??= new FunctionImage();
        if (s.Image.KernelPath.Length == 0) s.Image.KernelPath = options.FunctionKernel ?? "";
        if (s.Image.RootfsPath.Length == 0) s.Image.RootfsPath = options.FunctionRootfs ?? "";
        if (s.Image.KernelPath.Length == 0) throw VmApiException.Invalid($"{prefix}.image.kernel_path", "is required (this daemon has no FunctionKernel default)");
        if (s.Image.RootfsPath.Length == 0) throw VmApiException.Invalid($"{prefix}.image.rootfs_path", "is required (this daemon has no FunctionRootfs default)");
        SpecValidator.ValidateFile(s.Image.KernelPath, $"{prefix}.image.kernel_path", required: true);
        SpecValidator.ValidateFile(s.Image.RootfsPath, $"{prefix}.image.rootfs_path", required: true);
        FunctionValidator.ValidateLayers(s.Layers, $"{prefix}.layers");
        FunctionValidator.ValidateCode(s.Code, $"{prefix}.code");
        CheckPaths(s.Image.KernelPath, s.Image.RootfsPath, s.Layers, s.Code, prefix);
        FunctionValidator.ValidateHandler(s.Handler, $"{prefix}.handler");
        FunctionValidator.ValidateEnvironment(s.Environment, $"{prefix}.environment");
        s.MemoryMib = FunctionValidator.ValidateMemory(s.MemoryMib, $"{prefix}.memory_mib");
        s.Vcpus = FunctionValidator.ValidateVcpus(s.Vcpus, s.MemoryMib, host, $"{prefix}.vcpus");
        s.TimeoutSeconds = FunctionValidator.ValidateTimeout(s.TimeoutSeconds, $"{prefix}.timeout_seconds");
        return s;
    }

    private static string NewToken() => Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));

    [LoggerMessage(310, LogLevel.Information, "function {Name} created ({MemoryMib} MiB, {Vcpus} vCPU)")]
    private static partial void LogCreated(ILogger logger, string name, int memoryMib, int vcpus);

    [LoggerMessage(311, LogLevel.Information, "function {Name} updated to version {Version}")]
    private static partial void LogUpdated(ILogger logger, string name, string version);

    [LoggerMessage(312, LogLevel.Information, "function {Name} deleted")]
    private static partial void LogDeleted(ILogger logger, string name);

    [LoggerMessage(313, LogLevel.Information, "function {Name} loaded from the state directory")]
    private static partial void LogLoaded(ILogger logger, string name);

    [LoggerMessage(314, LogLevel.Warning, "function {Name} could not be loaded from the state directory: {Error}")]
    private static partial void LogLoadFailed(ILogger logger, string name, string error);
}
