using FireSharp.Agent.Functions;
using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Server;

/// <summary>FunctionInit, Invoke and FunctionShutdown (protocol version 2): see <see cref="FunctionHost"/>.</summary>
internal static class FunctionRequestHandler
{
    /// <param name="receivedAt">Stopwatch timestamp of when the request's frame was read.</param>
    public static async Task HandleAsync(AgentConnection connection, Request request, long receivedAt)
    {
        var functions = connection.Context.Functions;
        var ct = connection.ClientGone;
        Response response;
        try
        {
            response = request.BodyCase switch
            {
                Request.BodyOneofCase.FunctionInit => new Response { FunctionInit = await functions.InitAsync(request.FunctionInit, ct).ConfigureAwait(false) },
                Request.BodyOneofCase.Invoke => new Response { Invoke = await functions.InvokeAsync(request.Invoke, receivedAt, ct).ConfigureAwait(false) },
                Request.BodyOneofCase.FunctionShutdown => new Response { FunctionShutdown = await functions.ShutdownAsync(request.FunctionShutdown, ct).ConfigureAwait(false) },
                _ => throw new ArgumentOutOfRangeException(nameof(request), request.BodyCase, "not a function request"),
            };
        }
        catch (FunctionRequestException e)
        {
            await connection.SendErrorAsync(request.Id, e.Code, e.Message).ConfigureAwait(false);
            return;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return; // the client left; nobody to answer
        }
        response.Id = request.Id;
        await connection.SendAsync(response).ConfigureAwait(false);
    }
}
