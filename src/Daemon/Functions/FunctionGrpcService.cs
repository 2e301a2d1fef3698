using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// The gRPC face of <see cref="FunctionManager"/> (function.proto). Handlers pass the call's cancellation token
/// (which carries the deadline); errors are mapped by <see cref="ErrorInterceptor"/>, except a throttle, which
/// leaves as ResourceExhausted with the <c>retry-after</c> trailer (<see cref="FunctionErrors.Throttled"/>).
/// </summary>
public sealed class FunctionGrpcService(FunctionManager manager, InvocationLogs logs) : FunctionService.FunctionServiceBase
{
    public override async Task StreamFunctionLogs(StreamFunctionLogsRequest request, IServerStreamWriter<FunctionLogEntry> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (request.Limit < 0) throw VmApiException.Invalid("limit", "must be 0 (all that are kept) or more");
        await manager.GetAsync(request.Name, ct).ConfigureAwait(false); // NOT_FOUND for a function that does not exist
        await foreach (var log in logs.ReadAsync(request.Name, request.Limit, request.Follow, ct).ConfigureAwait(false))
        {
            var entry = new FunctionLogEntry { RequestId = log.RequestId, Time = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(log.Time), Text = log.Text };
            await responseStream.WriteAsync(entry, ct).ConfigureAwait(false);
        }
    }

    public override Task<Function> CreateFunction(CreateFunctionRequest request, ServerCallContext context) =>
        manager.CreateAsync(request, context.CancellationToken);

    public override Task<Function> UpdateFunctionConfiguration(UpdateFunctionConfigurationRequest request, ServerCallContext context) =>
        manager.UpdateConfigurationAsync(request, context.CancellationToken);

    public override Task<Function> UpdateFunctionCode(UpdateFunctionCodeRequest request, ServerCallContext context) =>
        manager.UpdateCodeAsync(request, context.CancellationToken);

    public override async Task<DeleteFunctionResponse> DeleteFunction(DeleteFunctionRequest request, ServerCallContext context)
    {
        await manager.DeleteAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
        logs.Forget(request.Name);
        return new DeleteFunctionResponse { Name = request.Name };
    }

    public override Task<Function> GetFunction(GetFunctionRequest request, ServerCallContext context) =>
        manager.GetAsync(request.Name, context.CancellationToken);

    public override Task<ListFunctionsResponse> ListFunctions(ListFunctionsRequest request, ServerCallContext context) =>
        manager.ListAsync(context.CancellationToken);

    public override Task<Function> PutFunctionConcurrency(PutFunctionConcurrencyRequest request, ServerCallContext context) =>
        manager.PutConcurrencyAsync(request, context.CancellationToken);

    public override Task<Function> PutProvisionedConcurrency(PutProvisionedConcurrencyRequest request, ServerCallContext context) =>
        manager.PutProvisionedAsync(request, context.CancellationToken);

    public override Task<AccountSettings> GetAccountSettings(GetAccountSettingsRequest request, ServerCallContext context) =>
        Task.FromResult(manager.GetAccountSettings());

    public override Task<InvokeResponse> Invoke(InvokeRequest request, ServerCallContext context) =>
        manager.InvokeAsync(request, context.CancellationToken);
}
