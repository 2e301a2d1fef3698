using System.Net.Sockets;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// A failure a command reports as one line on stderr (<c>firesharp: error: ...</c>), an optional hint line
/// (<c>hint: ...</c>) and an exit code of <see cref="ExitCodes"/>. Throw it from a command body; the client
/// plumbing (<see cref="DaemonClient"/>) and <see cref="CliApp"/> print it and exit.
/// </summary>
public class CliException(int exitCode, string message, string? hint = null, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
    public string? Hint { get; } = hint;
}

/// <summary>Bad input (exit 2): a value that does not parse, a missing or contradictory option.</summary>
public sealed class UsageException(string message, string? hint = null) : CliException(ExitCodes.Usage, message, hint);

/// <summary>
/// Maps failures to the exit-code table and to messages that name the fix; the one place that knows how a gRPC
/// status, a refused socket or a parse error becomes an exit code.
/// </summary>
public static class CliErrors
{
    /// <summary>Prints <c>firesharp: error: MESSAGE</c> and, if any, <c>hint: HINT</c> to <paramref name="error"/>.</summary>
    public static int Report(TextWriter error, int exitCode, string message, string? hint = null)
    {
        error.WriteLine($"firesharp: error: {OneLine(message)}");
        if (hint is not null) error.WriteLine($"hint: {hint}");
        return exitCode;
    }

    public static int Report(TextWriter error, CliException e) => Report(error, e.ExitCode, e.Message, e.Hint);

    /// <summary>The exit code, message and hint of a failed call to the daemon at <paramref name="target"/> (socket path or https URL).</summary>
    public static CliException FromRpc(RpcException e, string target, string? retryAfter = null)
    {
        if (e.StatusCode == StatusCode.Unavailable && Unreachable(e, target) is { } unreachable) return unreachable;
        string detail = e.Status.Detail is { Length: > 0 } d ? d : e.StatusCode.ToString();
        if (retryAfter is not null) detail += $" (retry after {retryAfter} s)";
        return e.StatusCode switch
        {
            StatusCode.NotFound => new CliException(ExitCodes.NotFound, detail),
            StatusCode.InvalidArgument or StatusCode.OutOfRange => new CliException(ExitCodes.Usage, detail, "the daemon refused a value; see --help for the command's options"),
            StatusCode.Unavailable => new CliException(ExitCodes.Unreachable, $"the daemon at {target} is unavailable: {detail}"),
            StatusCode.PermissionDenied => new CliException(ExitCodes.Failed, $"permission denied: {detail}",
                target.StartsWith('/') ? "this user's role does not allow the call (see docs/security.md: SocketAllowedUsers, SocketAllowedGroups)" : "the client certificate's role does not allow the call (TlsClients)"),
            StatusCode.Unauthenticated => new CliException(ExitCodes.Failed, $"not authenticated: {detail}", "check --cert, --key and --ca"),
            StatusCode.DeadlineExceeded => new CliException(ExitCodes.Failed, $"no answer in time: {detail}", "give the call more time with --timeout (such as 90s or 5m; 0 = none)"),
            StatusCode.AlreadyExists => new CliException(ExitCodes.Failed, $"already exists: {detail}"),
            StatusCode.FailedPrecondition => new CliException(ExitCodes.Failed, detail),
            StatusCode.ResourceExhausted => new CliException(ExitCodes.Failed, $"over a limit: {detail}"),
            _ => new CliException(ExitCodes.Failed, $"{e.StatusCode}: {detail}"),
        };
    }

    /// <summary>
    /// For a call that never reached the daemon: "no daemon at PATH (...)" or "permission denied on PATH (...)";
    /// null when the daemon answered Unavailable itself.
    /// </summary>
    private static CliException? Unreachable(RpcException e, string target)
    {
        var socket = Find<SocketException>(e.Status.DebugException) ?? Find<SocketException>(e);
        bool local = target.StartsWith('/');
        if (socket is null)
        {
            if (e.Status.DebugException is null) return null; // the daemon's own Unavailable
            return NoDaemon(target, local);
        }
        if (socket.SocketErrorCode == SocketError.AccessDenied)
            return new CliException(ExitCodes.Unreachable, $"permission denied on {target} (add yourself to group firesharp)",
                "sudo usermod -aG firesharp $USER, then log in again (or use --socket PATH / $FIRESHARP_SOCKET)");
        return NoDaemon(target, local);
    }

    private static CliException NoDaemon(string target, bool local) => local
        ? new CliException(ExitCodes.Unreachable, $"no daemon at {target} (is firesharp.service running? systemctl status firesharp)",
            "another socket: --socket PATH or $FIRESHARP_SOCKET")
        : new CliException(ExitCodes.Unreachable, $"no daemon at {target} (is firesharp listening there? check TcpListen and the firewall)");

    private static T? Find<T>(Exception? e) where T : Exception
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is T t) return t;
            if (e is AggregateException a && a.InnerExceptions.Count > 0 && Find<T>(a.InnerExceptions[0]) is { } inner) return inner;
        }
        return null;
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}
