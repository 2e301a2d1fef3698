using FireSharp.Daemon.Vms;
using FireSharp.Proto.V1;
using Grpc.Core;
using static FireSharp.Daemon.VmApiMapping;

namespace FireSharp.Daemon;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// The gRPC face of <see cref="VmManager"/>. Handlers map each request to the manager's domain types
/// (<see cref="VmApiMapping"/>), call it with the call's cancellation token (which also carries the deadline)
/// and map the result back; errors are mapped by <see cref="ErrorInterceptor"/>.
/// </summary>
public sealed class VmGrpcService(VmManager manager) : VmService.VmServiceBase
{
    public override async Task<Vm> CreateVm(CreateVmRequest request, ServerCallContext context) =>
        ToProto(await manager.CreateAsync(ToCommand(request), context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> StartVm(StartVmRequest request, ServerCallContext context) =>
        ToProto(await manager.StartAsync(request.Id, context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> PauseVm(PauseVmRequest request, ServerCallContext context) =>
        ToProto(await manager.PauseAsync(request.Id, context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> ResumeVm(ResumeVmRequest request, ServerCallContext context) =>
        ToProto(await manager.ResumeAsync(request.Id, context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> StopVm(StopVmRequest request, ServerCallContext context) =>
        ToProto(await manager.StopAsync(request.Id, request.GracePeriodSeconds, request.Force, context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> UpdateRateLimiters(UpdateRateLimitersRequest request, ServerCallContext context) =>
        ToProto(await manager.UpdateRateLimitersAsync(ToCommand(request), context.CancellationToken).ConfigureAwait(false));

    public override async Task<DeleteVmResponse> DeleteVm(DeleteVmRequest request, ServerCallContext context)
    {
        await manager.DeleteAsync(request.Id, request.Force, context.CancellationToken).ConfigureAwait(false);
        return new DeleteVmResponse { Id = request.Id };
    }

    public override Task<Vm> GetVm(GetVmRequest request, ServerCallContext context) =>
        Task.FromResult(ToProto(manager.Get(request.Id)));

    public override Task<ListVmsResponse> ListVms(ListVmsRequest request, ServerCallContext context)
    {
        var selector = Labels(request.LabelSelector);
        SpecValidator.ValidateLabels(selector, "label_selector");
        var phases = ToPhases(request.States, "states");
        var response = new ListVmsResponse();
        response.Vms.AddRange(manager.List(selector, phases).Select(ToProto));
        return Task.FromResult(response);
    }

    public override async Task WatchEvents(WatchEventsRequest request, IServerStreamWriter<VmEvent> responseStream, ServerCallContext context)
    {
        string? id = request.Id.Length == 0 ? null : request.Id;
        var ct = context.CancellationToken;
        try
        {
            // Headers as soon as the watch is subscribed: `--wait` makes its call only then, so it misses no event.
            await foreach (var ev in manager.WatchAsync(id, request.IncludeSnapshot, ct, () => context.WriteResponseHeadersAsync(new Metadata())).ConfigureAwait(false))
                await responseStream.WriteAsync(ToProto(ev), ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested && context.Deadline > DateTime.UtcNow)
        {
            // The watcher went away: the normal end of a watch.
        }
    }

    public override async Task StreamVmLogs(StreamVmLogsRequest request, IServerStreamWriter<VmLogChunk> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        bool console = request.Source is VmLogSource.Unspecified or VmLogSource.Console;
        bool vmm = request.Source is VmLogSource.Unspecified or VmLogSource.Vmm;
        if (!Enum.IsDefined(request.Source)) throw VmApiException.Invalid("source", $"{(int)request.Source} is not a log source");
        try
        {
            await foreach (var piece in manager.ReadLogsAsync(request.Id, console, vmm, request.Follow, request.TailBytes, ct).ConfigureAwait(false))
            {
                var source = piece.Kind == Logs.VmLogKind.Console ? VmLogSource.Console : VmLogSource.Vmm;
                await responseStream.WriteAsync(new VmLogChunk { Source = source, Data = Google.Protobuf.ByteString.CopyFrom(piece.Data.Span) }, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
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
            catch (RpcException)
            {
                // Input this client may not send (a viewer's): end the call with that status, not just the input.
                await done.CancelAsync().ConfigureAwait(false);
                throw;
            }
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

    public override async Task<SnapshotInfo> CreateSnapshot(CreateSnapshotRequest request, ServerCallContext context) =>
        ToProto(await manager.CreateSnapshotAsync(ToCommand(request), context.CancellationToken).ConfigureAwait(false));

    public override async Task<Vm> RestoreVm(RestoreVmRequest request, ServerCallContext context) =>
        ToProto(await manager.RestoreAsync(ToCommand(request), context.CancellationToken).ConfigureAwait(false));

    public override async Task<ExecResponse> Exec(ExecRequest request, ServerCallContext context) =>
        ToProto(await manager.ExecAsync(ToCommand(request), context.CancellationToken).ConfigureAwait(false));

    public override async Task<CopyInResponse> CopyIn(IAsyncStreamReader<CopyInRequest> requestStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct).ConfigureAwait(false))
            throw VmApiException.Invalid("id", "the first CopyIn message must name the VM and the path");
        var first = requestStream.Current;
        long size = await manager.CopyInAsync(new CopyInCommand(first.Id, first.Path, first.Mode, first.CreateParents), Data(first, requestStream, ct), ct).ConfigureAwait(false);
        return new CopyInResponse { Path = first.Path, BytesWritten = (ulong)size };

        static async IAsyncEnumerable<ReadOnlyMemory<byte>> Data(CopyInRequest first, IAsyncStreamReader<CopyInRequest> rest, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        {
            yield return first.Data.Memory;
            while (await rest.MoveNext(ct).ConfigureAwait(false))
                yield return rest.Current.Data.Memory;
        }
    }

    public override async Task CopyOut(CopyOutRequest request, IServerStreamWriter<CopyOutChunk> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        bool first = true;
        await foreach (var chunk in manager.CopyOutAsync(request.Id, request.Path, ct).ConfigureAwait(false))
        {
            var message = new CopyOutChunk { Offset = (ulong)chunk.Offset, Data = Google.Protobuf.UnsafeByteOperations.UnsafeWrap(chunk.Data) };
            if (first) (message.Mode, message.Size) = (chunk.Mode, (ulong)chunk.Size);
            first = false;
            await responseStream.WriteAsync(message, ct).ConfigureAwait(false);
        }
    }
}
