using System.Runtime.CompilerServices;
using FireSharp.Daemon.Agent;
using AgentErrorCode = FireSharp.Proto.Agent.ErrorCode;

namespace FireSharp.Daemon.Vms;

/// <summary>What CopyIn writes: a file in the guest (an absolute path), its mode (0 = 0644), and whether missing parents are made.</summary>
public sealed record CopyInCommand(string Id, string Path, uint Mode = 0, bool CreateParents = false);

/// <summary>
/// Files copied into and out of a running VM through its guest agent (<c>firesharp vm cp</c>), streamed in chunks
/// of at most 1 MiB (<see cref="AgentFileTransfer"/>), so there is no size limit and the daemon holds one chunk per
/// copy. The agent's errors become the API's, naming the field <c>path</c>.
/// </summary>
internal sealed class GuestFiles(GuestAgents agents)
{
    /// <summary>Writes <paramref name="data"/> to the guest file; returns its size.</summary>
    public async Task<long> CopyInAsync(VmEntry entry, CopyInCommand command, IAsyncEnumerable<ReadOnlyMemory<byte>> data, CancellationToken ct)
    {
        CheckPath(command.Path);
        if ((command.Mode & ~0xFFFu) != 0) throw VmApiException.Invalid("mode", $"{Convert.ToString(command.Mode, 8)} has bits beyond 07777");
        string uds = agents.ReadyAgentPath(entry);
        try
        {
            await using var client = await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: ct).ConfigureAwait(false);
            return await AgentFileTransfer.WriteAsync(client, command.Path, command.Mode, command.CreateParents, data, ct: ct).ConfigureAwait(false);
        }
        catch (AgentException e)
        {
            throw Map(entry.Id, e);
        }
    }

    /// <summary>Reads the guest file in chunks, the first with its mode and size.</summary>
    public async IAsyncEnumerable<GuestFileChunk> CopyOutAsync(VmEntry entry, string path, [EnumeratorCancellation] CancellationToken ct)
    {
        CheckPath(path);
        string uds = agents.ReadyAgentPath(entry);
        AgentClient client;
        try
        {
            client = await AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: ct).ConfigureAwait(false);
        }
        catch (AgentException e)
        {
            throw Map(entry.Id, e);
        }
        await using (client.ConfigureAwait(false))
        {
            // (No yield inside a try with a catch: the agent's errors are mapped around each step instead.)
            var chunks = AgentFileTransfer.ReadAsync(client, path, ct: ct).GetAsyncEnumerator(ct);
            await using (chunks.ConfigureAwait(false))
            {
                while (await Step(entry.Id, chunks).ConfigureAwait(false))
                    yield return chunks.Current;
            }
        }
    }

    private static async Task<bool> Step(string id, IAsyncEnumerator<GuestFileChunk> chunks)
    {
        try
        {
            return await chunks.MoveNextAsync().ConfigureAwait(false);
        }
        catch (AgentException e)
        {
            throw Map(id, e);
        }
    }

    private static void CheckPath(string path)
    {
        if (path.Length == 0) throw VmApiException.Invalid("path", "is required");
        if (path[0] != '/') throw VmApiException.Invalid("path", $"'{path}' must be absolute (a path in the guest)");
        if (path.Contains('\0', StringComparison.Ordinal)) throw VmApiException.Invalid("path", "contains a NUL character");
    }

    private static VmApiException Map(string id, AgentException e) => e.Failure != AgentFailure.Remote
        ? VmApiException.Unavailable($"the guest agent of VM '{id}': {e.Message}")
        : e.Code switch
        {
            AgentErrorCode.NotFound => new VmApiException(VmErrorKind.NotFound, "path", Detail(e)),
            AgentErrorCode.InvalidArgument or AgentErrorCode.FileTooLarge => VmApiException.Invalid("path", Detail(e)),
            AgentErrorCode.PermissionDenied => new VmApiException(VmErrorKind.PermissionDenied, "path", Detail(e)),
            AgentErrorCode.ResourceExhausted or AgentErrorCode.IoError => VmApiException.Exhausted("path", Detail(e)),
            _ => VmApiException.Unavailable($"the guest agent of VM '{id}': {e.Message}"),
        };

    /// <summary>The agent's message without the request name the client puts in front ("ReadFile: ").</summary>
    private static string Detail(AgentException e) => e.Message[(e.Message.IndexOf(": ", StringComparison.Ordinal) is var i and >= 0 ? i + 2 : 0)..];
}
