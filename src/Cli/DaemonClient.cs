using System.CommandLine;
using FireSharp.Cli.Output;
using FireSharp.Daemon;
using Grpc.Core;
using Grpc.Net.Client;

namespace FireSharp.Cli;

/// <summary>
/// The daemon client's plumbing shared by <c>firesharp vm</c>, <c>fn</c> and <c>snapshot</c> (and any later client
/// command): the connection options (the Unix socket, default /run/firesharp/firesharp.sock or
/// <c>$FIRESHARP_SOCKET</c>, or <c>--host https://h:p --cert --key --ca</c> over TCP with mutual TLS), the output
/// options of <see cref="OutputOptions"/>, and <see cref="CallAsync"/>, which connects, runs a command's calls and
/// turns every failure into one line, a hint and an exit code of <see cref="ExitCodes"/> (<see cref="CliErrors"/>).
/// </summary>
public static class DaemonClient
{
    public static readonly Option<string> Socket = new("--socket")
    {
        Description = "the daemon's Unix socket ($FIRESHARP_SOCKET)",
        Recursive = true,
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("FIRESHARP_SOCKET") is { Length: > 0 } s ? s : DaemonChannel.DefaultSocket,
    };
    public static readonly Option<string?> Host = new("--host") { Description = "TCP address https://host:port (mutual TLS; needs --cert, --key, --ca)", Recursive = true };
    public static readonly Option<string?> Cert = new("--cert") { Description = "client certificate (PEM) for --host", Recursive = true };
    public static readonly Option<string?> Key = new("--key") { Description = "client key (PEM) for --host", Recursive = true };
    public static readonly Option<string?> Ca = new("--ca") { Description = "CA certificate (PEM) the daemon's certificate must chain to", Recursive = true };
    /// <summary>The one <c>--timeout</c> (<see cref="Deadlines"/>: a duration, or each command's own budget).</summary>
    public static Option<TimeSpan?> Timeout => Deadlines.Timeout;

    /// <summary>The connection options (recursive: add them to a command group).</summary>
    public static Option[] ConnectionOptions => [Socket, Host, Cert, Key, Ca, Timeout];

    /// <summary>The connection and output options, for a client command group.</summary>
    public static Option[] All => [.. ConnectionOptions, .. OutputOptions.All];

    /// <summary>Where the calls go: the socket path or the --host URL (for messages).</summary>
    public static string Target(ParseResult parse) => parse.GetValue(Host) ?? parse.GetValue(Socket)!;

    /// <summary>
    /// Connects, runs <paramref name="body"/> with a client made by <paramref name="client"/> and call options (the
    /// --timeout deadline unless <paramref name="streaming"/>), and returns the exit code: 0, or what the body set
    /// in <see cref="Environment.ExitCode"/> (a guest command's own code), or the failure's code. Ctrl-C ends with 0.
    /// </summary>
    public static async Task<int> CallAsync<TClient>(ParseResult parse, Func<CallInvoker, TClient> client, Func<TClient, CallOptions, Task> body,
        CancellationToken ct, bool streaming = false, Func<RpcException, string?>? retryAfter = null)
    {
        string target = Target(parse);
        try
        {
            using var channel = Connect(parse);
            var options = new CallOptions(cancellationToken: ct, deadline: streaming ? null : Deadlines.For(parse));
            Environment.ExitCode = 0;
            await body(client(channel.CreateCallInvoker()), options);
            int code = Environment.ExitCode; // set by a body whose call worked but whose guest command or function failed
            Environment.ExitCode = 0;
            return code;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
        {
            return ExitCodes.Ok; // Ctrl-C on a stream
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return ExitCodes.Ok;
        }
        catch (RpcException e)
        {
            return CliErrors.Report(Console.Error, CliErrors.FromRpc(e, target, retryAfter?.Invoke(e)));
        }
        catch (CliException e)
        {
            return CliErrors.Report(Console.Error, e);
        }
        catch (Args.ArgException e)
        {
            return CliErrors.Report(Console.Error, ExitCodes.Usage, e.Message, e.Hint);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return CliErrors.Report(Console.Error, ExitCodes.NotFound, e.Message); // a local file the command was given (vm cp)
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            return CliErrors.Report(Console.Error, ExitCodes.Usage, e.Message, $"see '{CommandPath(parse)} --help'");
        }
        finally
        {
            Environment.ExitCode = 0;
        }
    }

    private static GrpcChannel Connect(ParseResult parse) =>
        parse.GetValue(Host) is { } host
            ? DaemonChannel.ForTcp(host,
                parse.GetValue(Cert) ?? throw new UsageException("--host needs --cert", "--host https://HOST:PORT --cert client.pem --key client.key --ca ca.pem"),
                parse.GetValue(Key) ?? throw new UsageException("--host needs --key", "--host https://HOST:PORT --cert client.pem --key client.key --ca ca.pem"),
                parse.GetValue(Ca) ?? throw new UsageException("--host needs --ca", "--host https://HOST:PORT --cert client.pem --key client.key --ca ca.pem"))
            : DaemonChannel.ForUnixSocket(parse.GetValue(Socket)!);

    /// <summary>"firesharp vm create": the command a parse result ran, for hints.</summary>
    public static string CommandPath(ParseResult parse) => Output.Printer.CommandPathOf(parse);
}
