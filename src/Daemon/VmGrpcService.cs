using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Daemon;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// The gRPC face of <see cref="VmManager"/>. Handlers validate the request shape, call the manager with the
/// call's cancellation token (which also carries the deadline) and return; errors are mapped by
/// <see cref="ErrorInterceptor"/>.
/// </summary>
public sealed class VmGrpcService(VmManager manager) : VmService.VmServiceBase
{
    public override Task<Vm> CreateVm(CreateVmRequest request, ServerCallContext context) =>
        manager.CreateAsync(request, context.CancellationToken);

    public override Task<Vm> StartVm(StartVmRequest request, ServerCallContext context) =>
        manager.StartAsync(request.Id, context.CancellationToken);

    public override Task<Vm> PauseVm(PauseVmRequest request, ServerCallContext context) =>
        manager.PauseAsync(request.Id, context.CancellationToken);

    public override Task<Vm> ResumeVm(ResumeVmRequest request, ServerCallContext context) =>
        manager.ResumeAsync(request.Id, context.CancellationToken);

    public override Task<Vm> StopVm(StopVmRequest request, ServerCallContext context) =>
        manager.StopAsync(request.Id, request.GracePeriodSeconds, request.Force, context.CancellationToken);

    public override async Task<DeleteVmResponse> DeleteVm(DeleteVmRequest request, ServerCallContext context)
    {
        await manager.DeleteAsync(request.Id, request.Force, context.CancellationToken).ConfigureAwait(false);
        return new DeleteVmResponse { Id = request.Id };
    }

    public override Task<Vm> GetVm(GetVmRequest request, ServerCallContext context) =>
        Task.FromResult(manager.Get(request.Id));

    public override Task<ListVmsResponse> ListVms(ListVmsRequest request, ServerCallContext context)
    {
        SpecValidator.ValidateLabels(request.LabelSelector, "label_selector");
        SpecValidator.ValidateStates(request.States, "states");
        var response = new ListVmsResponse();
        response.Vms.AddRange(manager.List(request.LabelSelector, request.States.ToHashSet()));
        return Task.FromResult(response);
    }

    public override async Task WatchEvents(WatchEventsRequest request, IServerStreamWriter<VmEvent> responseStream, ServerCallContext context)
    {
        string? id = request.Id.Length == 0 ? null : request.Id;
        var ct = context.CancellationToken;
        try
        {
            await foreach (var ev in manager.WatchAsync(id, request.IncludeSnapshot, ct).ConfigureAwait(false))
                await responseStream.WriteAsync(ev, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested && context.Deadline > DateTime.UtcNow)
        {
            // The watcher went away: the normal end of a watch.
        }
    }

    public override async Task StreamConsole(IAsyncStreamReader<ConsoleRequest> requestStream, IServerStreamWriter<ConsoleOutput> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct).ConfigureAwait(false))
            throw VmApiException.Invalid("id", "the first console message must name the VM");
        var first = requestStream.Current;
        await using var console = await manager.AttachConsoleAsync(first.Id, first.Replay, ct).ConfigureAwait(false);
        await console.SendInputAsync(first.Input.Memory, ct).ConfigureAwait(false);

        using var done = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var input = Task.Run(async () =>
        {
            try
            {
                while (await requestStream.MoveNext(done.Token).ConfigureAwait(false))
                    await console.SendInputAsync(requestStream.Current.Input.Memory, done.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or VmApiException or IOException) { }
            // The client finished sending: output keeps flowing until it cancels.
        }, CancellationToken.None);
        try
        {
            await foreach (var chunk in console.ReadAllAsync(done.Token).ConfigureAwait(false))
                await responseStream.WriteAsync(new ConsoleOutput { Data = chunk.Data, Dropped = chunk.Dropped }, done.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested && context.Deadline > DateTime.UtcNow)
        {
        }
        finally
        {
            await done.CancelAsync().ConfigureAwait(false);
            await input.ConfigureAwait(false);
        }
    }

    public override Task<SnapshotInfo> CreateSnapshot(CreateSnapshotRequest request, ServerCallContext context) =>
        manager.CreateSnapshotAsync(request, context.CancellationToken);

    public override Task<Vm> RestoreVm(RestoreVmRequest request, ServerCallContext context) =>
        manager.RestoreAsync(request, context.CancellationToken);

    public override Task<ExecResponse> Exec(ExecRequest request, ServerCallContext context) =>
        manager.ExecAsync(request, context.CancellationToken);
}
