using System.CommandLine;
using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp vm console ID</c>: the VM's serial console. On a terminal it runs in raw mode, as telnet and virsh
/// console do: every key goes to the guest as typed (Ctrl-C too, as the byte 0x03), the guest echoes, and the
/// detach key (Ctrl-] unless <c>--detach-key</c> says otherwise) ends the session. The terminal's mode is restored
/// however the session ends (detach, the VM's end, an error, SIGTERM or SIGHUP). When stdin is not a terminal
/// (a pipe, a file) it stays line-mode: stdin is sent as it comes and Ctrl-C (SIGINT) detaches.
/// </summary>
internal static class ConsoleCommand
{
    public static Command Create()
    {
        var id = new Argument<string>("id");
        var noReplay = new Option<bool>("--no-replay") { Description = "only new output (default: the kept history first)" };
        var noInput = new Option<bool>("--no-input") { Description = "do not send stdin to the guest" };
        var detach = new Option<string>("--detach-key")
        {
            Description = "the key that detaches on a terminal: ctrl-] (default), ctrl-A ... ctrl-_, or none",
            DefaultValueFactory = _ => "ctrl-]",
        };
        var command = new Command("console", "attach to the VM's serial console (raw on a terminal: keys and Ctrl-C go to the guest; Ctrl-] detaches)")
            { id, noReplay, noInput, detach };
        command.SetAction((parse, ct) =>
        {
            byte? key;
            try { key = DetachKey.Parse(parse.GetValue(detach)!); }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"firesharp: {e.Message}");
                return Task.FromResult(VmClientCommands.ExitRefused);
            }
            return VmClientCommands.CallAsync(parse, (client, options) =>
                AttachAsync(client, parse.GetValue(id)!, !parse.GetValue(noReplay), !parse.GetValue(noInput), key, options.CancellationToken), ct, streaming: true);
        });
        return command;
    }

    private static async Task AttachAsync(VmService.VmServiceClient client, string id, bool replay, bool input, byte? detachKey, CancellationToken ct)
    {
        bool raw = input && Terminal.IsTerminal(0);
        using var session = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var call = client.StreamConsole(cancellationToken: session.Token);
        await call.RequestStream.WriteAsync(new ConsoleRequest { Id = id, Replay = replay }, ct).ConfigureAwait(false);
        if (raw && detachKey is { } k) Console.Error.WriteLine($"firesharp: attached to the console of VM {id}; {DetachKey.Name(k)} detaches");
        using var terminal = raw ? TerminalGuard.Enter() : null;
        Task pump = Task.CompletedTask;
        if (input)
        {
            pump = Task.Run(async () =>
            {
                bool detached = await PumpInputAsync(Console.OpenStandardInput(), (data, c) => call.RequestStream.WriteAsync(new ConsoleRequest { Input = ByteString.CopyFrom(data.Span) }, c),
                    raw ? detachKey : null, session.Token).ConfigureAwait(false);
                if (detached) await session.CancelAsync().ConfigureAwait(false);
            }, CancellationToken.None);
        }
        try
        {
            using var stdout = Console.OpenStandardOutput();
            await foreach (var chunk in call.ResponseStream.ReadAllAsync(session.Token).ConfigureAwait(false))
            {
                if (chunk.Dropped > 0) Console.Error.Write($"firesharp: [{chunk.Dropped} console bytes were lost]{(raw ? "\r\n" : "\n")}");
                stdout.Write(chunk.Data.Span);
                stdout.Flush();
            }
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled } && session.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // Detached.
        }
        finally
        {
            terminal?.Dispose();
            await session.CancelAsync().ConfigureAwait(false);
            if (raw) Console.Error.WriteLine();
        }
    }

    /// <summary>
    /// Sends what <paramref name="input"/> gives to the guest, as it comes, until its end (false) or until the detach
    /// key (true; the bytes before it are sent, the key and what follows are not). Every other byte passes as is,
    /// Ctrl-C (0x03) included.
    /// </summary>
    public static async Task<bool> PumpInputAsync(Stream input, Func<ReadOnlyMemory<byte>, CancellationToken, Task> send, byte? detachKey, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(send);
        try
        {
            var buffer = new byte[4096];
            int n;
            while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                int cut = detachKey is { } key ? Array.IndexOf(buffer, key, 0, n) : -1;
                int count = cut >= 0 ? cut : n;
                if (count > 0) await send(buffer.AsMemory(0, count), ct).ConfigureAwait(false);
                if (cut >= 0) return true;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException or IOException or InvalidOperationException) { }
        return false;
    }

    /// <summary>The terminal in raw mode, restored on dispose, at process exit and on SIGTERM, SIGHUP and SIGQUIT.</summary>
    private sealed class TerminalGuard : IDisposable
    {
        private readonly Terminal.RawMode _mode;
        private readonly PosixSignalRegistration[] _signals;

        private TerminalGuard(Terminal.RawMode mode)
        {
            _mode = mode;
            // Restore first, then let the signal do what it does (ctx.Cancel stays false).
            _signals = [.. new[] { PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT }.Select(s => PosixSignalRegistration.Create(s, _ => _mode.Dispose()))];
            AppDomain.CurrentDomain.ProcessExit += Restore;
        }

        public static TerminalGuard Enter() => new(Terminal.EnterRawMode(0));

        private void Restore(object? sender, EventArgs e) => _mode.Dispose();

        public void Dispose()
        {
            _mode.Dispose();
            AppDomain.CurrentDomain.ProcessExit -= Restore;
            foreach (var s in _signals) s.Dispose();
        }
    }
}

/// <summary>The console's detach key: "ctrl-X" for X in @, A-Z, [, \, ], ^, _ (bytes 0x00-0x1f), or "none".</summary>
internal static class DetachKey
{
    public static byte? Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        if (t.Equals("none", StringComparison.OrdinalIgnoreCase)) return null;
        string? rest = t.StartsWith("ctrl-", StringComparison.OrdinalIgnoreCase) ? t[5..]
            : t.StartsWith('^') ? t[1..] : null;
        if (rest is { Length: 1 } && char.ToUpperInvariant(rest[0]) is var c and >= '@' and <= '_')
            return (byte)(c - '@');
        throw new ArgumentException($"--detach-key {text}: expected ctrl-X (X one of @, A-Z, [, \\, ], ^, _) or none");
    }

    /// <summary>"Ctrl-]" for 0x1d.</summary>
    public static string Name(byte key) => $"Ctrl-{(char)('@' + key)}";
}
