using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// The gRPC face of <see cref="FunctionManager"/> (function.proto). Handlers pass the call's cancellation token
/// (which carries the deadline); errors are mapped by <see cref="ErrorInterceptor"/>, except a throttle, which
/// leaves as ResourceExhausted with the <c>retry-after</c> trailer (<see cref="FunctionErrors.Throttled"/>).
/// </summary>
public sealed class FunctionGrpcService(FunctionManager manager) : FunctionService.FunctionServiceBase
{
    public override Task<Function> CreateFunction(CreateFunctionRequest request, ServerCallContext context) =>
        manager.CreateAsync(request, context.CancellationToken);

    public override Task<Function> UpdateFunctionConfiguration(UpdateFunctionConfigurationRequest request, ServerCallContext context) =>
        manager.UpdateConfigurationAsync(request, context.CancellationToken);

    public override Task<Function> UpdateFunctionCode(UpdateFunctionCodeRequest request, ServerCallContext context) =>
        manager.UpdateCodeAsync(request, context.CancellationToken);

    public override async Task<DeleteFunctionResponse> DeleteFunction(DeleteFunctionRequest request, ServerCallContext context)
    {
        await manager.DeleteAsync(request.Name, context.CancellationToken).ConfigureAwait(false);
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
