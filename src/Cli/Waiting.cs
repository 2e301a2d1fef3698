using System.CommandLine;
using FireSharp.Proto.V1;
using Grpc.Core;
using Spectre.Console;

namespace FireSharp.Cli;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>What <c>--wait</c> waits for.</summary>
internal enum WaitFor
{
    None,
    /// <summary>The VM is RUNNING.</summary>
    Running,
    /// <summary>The guest sent the boot-done signal (a restored VM booted before its snapshot: running is enough).</summary>
    Boot,
    /// <summary>The guest agent reported ready (the VM needs spec.agent).</summary>
    Agent,
}

/// <summary>
/// <c>--wait[=running|boot|agent]</c> on <c>vm create</c>, <c>vm start</c> and <c>snapshot restore</c>: the command
/// returns once the VM is there, or fails with one line when the VM ends first or the time runs out (exit 1). Built
/// on WatchEvents: the watch is subscribed before the call is made (the daemon sends its response headers once it
/// has subscribed), so no event can fall between the two. On a terminal a spinner shows the progress, otherwise
/// plain lines on stderr; stdout gets only the result.
/// </summary>
internal static class Waiting
{
    public static readonly Option<WaitFor> Wait = new("--wait")
    {
        Description = "wait until the VM is running, has booted or its agent is ready: --wait[=running|boot|agent] (alone: running)",
        Arity = ArgumentArity.ZeroOrOne,
        DefaultValueFactory = _ => WaitFor.None,
        CustomParser = r =>
        {
            if (r.Tokens.Count == 0) return WaitFor.Running;
            if (Parse(r.Tokens[0].Value) is { } kind) return kind;
            // `vm start --wait ID` would take the id for the kind: say how to write it.
            r.AddError($"--wait {r.Tokens[0].Value}: expected running, boot or agent (write --wait=KIND, or put a bare --wait after the VM id)");
            return WaitFor.None;
        },
    };

    /// <summary>What the parsed command waits for: None without --wait, Running for a bare --wait.</summary>
    public static WaitFor Requested(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        if (parse.GetResult(Wait) is not { Implicit: false } result) return WaitFor.None;
        return result.Tokens.Count == 0 ? WaitFor.Running : parse.GetValue(Wait);
    }

    public static WaitFor? Parse(string text) => text.ToLowerInvariant() switch
    {
        "running" => WaitFor.Running,
        "boot" or "booted" => WaitFor.Boot,
        "agent" => WaitFor.Agent,
        _ => null,
    };

    public static string Describe(WaitFor what) => what switch
    {
        WaitFor.Boot => "boot",
        WaitFor.Agent => "report its guest agent ready",
        _ => "run",
    };

    /// <summary><c>vm start ID [--wait[=...]]</c>.</summary>
    public static Command StartCommand()
    {
        var id = new Argument<string>("id");
        var command = new Command("start", "start a created (or stopped) VM") { id, Wait };
        command.SetAction((parse, ct) => VmClientCommands.CallAsync(parse, async (client, options) =>
        {
            string vm = parse.GetValue(id)!;
            VmClientCommands.PrintVm(parse, await CallAsync(parse, client, options, vm, exists: true, restored: false,
                o => client.StartVmAsync(new StartVmRequest { Id = vm }, o).ResponseAsync).ConfigureAwait(false));
        }, ct));
        return command;
    }

    /// <summary>
    /// Makes <paramref name="call"/> (a create, start or restore of VM <paramref name="id"/>) and, with --wait, waits.
    /// <paramref name="exists"/>: the VM exists before the call (start), so the watch can name it; otherwise every VM's
    /// events are watched and filtered. Throws <see cref="WaitException"/> when the wait fails or times out.
    /// </summary>
    public static async Task<Vm> CallAsync(ParseResult parse, VmService.VmServiceClient client, CallOptions options, string id, bool exists,
        bool restored, Func<CallOptions, Task<Vm>> call)
    {
        var what = Requested(parse);
        if (what == WaitFor.None) return await call(options).ConfigureAwait(false);
        var limit = Deadlines.Given(parse) ?? (Deadlines.Budget(parse) is { } b ? b + (what == WaitFor.Running ? TimeSpan.Zero : Deadlines.WaitBudget) : null);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken);
        if (limit is { } l && l > TimeSpan.Zero) cts.CancelAfter(l);
        var deadline = Deadlines.At(limit);
        var tracker = new WaitTracker(id, what, restored);
        var progress = WaitProgress.Create(id, what);
        try
        {
            return await progress.RunAsync(async report =>
            {
                using var watch = client.WatchEvents(new WatchEventsRequest { Id = exists ? id : "" }, options.WithCancellationToken(cts.Token).WithDeadline(deadline ?? DateTime.MaxValue));
                await watch.ResponseHeadersAsync.ConfigureAwait(false); // the daemon is subscribed
                var vm = await call(options.WithCancellationToken(cts.Token).WithDeadline(deadline ?? DateTime.MaxValue)).ConfigureAwait(false);
                tracker.Observe(vm);
                report(tracker.Progress);
                while (tracker.Status == WaitStatus.Pending)
                {
                    if (!await watch.ResponseStream.MoveNext(cts.Token).ConfigureAwait(false))
                        throw new WaitException(StatusCode.Unavailable, $"the daemon ended the event stream before VM {id} was ready");
                    var ev = watch.ResponseStream.Current;
                    if (ev.Type == EventType.Dropped) tracker.Observe(await client.GetVmAsync(new GetVmRequest { Id = id }, cancellationToken: cts.Token).ConfigureAwait(false));
                    else if (ev.Id == id) tracker.Observe(ev);
                    report(tracker.Progress);
                }
                if (tracker.Status == WaitStatus.Failed) throw new WaitException(tracker.FailureCode, tracker.Failure!);
                // The VM as it is now (boot time, agent_ready), for the output.
                return await client.GetVmAsync(new GetVmRequest { Id = id }, cancellationToken: cts.Token).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }
        catch (Exception e) when (TimedOut(e, cts, options.CancellationToken))
        {
            throw new WaitException(StatusCode.DeadlineExceeded, $"timed out after {Seconds(limit!.Value)} waiting for VM {id} to {Describe(what)} ({tracker.Progress}); raise --timeout, or see `firesharp vm console {id}`");
        }
    }

    private static bool TimedOut(Exception e, CancellationTokenSource cts, CancellationToken user) =>
        !user.IsCancellationRequested && (e is OperationCanceledException && cts.IsCancellationRequested
            || e is RpcException { StatusCode: StatusCode.DeadlineExceeded } || e is RpcException { StatusCode: StatusCode.Cancelled } && cts.IsCancellationRequested);

    private static string Seconds(TimeSpan t) => t.TotalSeconds >= 1 ? $"{t.TotalSeconds:0.#} s" : $"{t.TotalMilliseconds:0} ms";
}

/// <summary>
/// A wait that failed: the time ran out (DEADLINE_EXCEEDED), the VM ended first (ABORTED) or has no agent
/// (FAILED_PRECONDITION). An RpcException, so the client commands report it and choose the exit code as for the
/// daemon's own failures (1 for the first two).
/// </summary>
internal sealed class WaitException(StatusCode code, string message) : RpcException(new Grpc.Core.Status(code, message), message);

internal enum WaitStatus { Pending, Done, Failed }

/// <summary>
/// Where a waited-for VM is, from the call's reply and its events (no I/O: tested on its own). Done once the VM
/// reached what is waited for (even if it ended since: a guest that booted and reset did boot); failed when the VM
/// ended, was deleted or lacks an agent before that.
/// </summary>
internal sealed class WaitTracker(string id, WaitFor what, bool restored)
{
    public WaitStatus Status { get; private set; }
    public string? Failure { get; private set; }
    public StatusCode FailureCode { get; private set; } = StatusCode.Aborted;

    /// <summary>A few words on how far the VM got (for progress and timeouts).</summary>
    public string Progress { get; private set; } = "not created yet";

    private bool _running, _booted, _agent;

    public WaitStatus Observe(Vm vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        if (what == WaitFor.Agent && vm.Spec is { Agent: false })
        {
            FailureCode = StatusCode.FailedPrecondition;
            return Fail($"VM {id} has no guest agent to wait for (create it with --agent)");
        }
        _booted |= vm.BootTimeMs > 0;
        _agent |= vm.AgentReady;
        _running |= vm.State == VmState.Running;
        return Update(vm.State, vm.Exit);
    }

    public WaitStatus Observe(VmEvent ev)
    {
        ArgumentNullException.ThrowIfNull(ev);
        switch (ev.Type)
        {
            case EventType.BootDone: _booted = true; break;
            case EventType.AgentReady: _agent = true; break;
            case EventType.Deleted: return Fail($"VM {id} was deleted while waiting for it to {Waiting.Describe(what)}");
        }
        _running |= ev.State == VmState.Running;
        return Update(ev.State, ev.Type == EventType.Exited ? ev.Exit : null);
    }

    private WaitStatus Update(VmState state, VmExitInfo? exit)
    {
        if (Status != WaitStatus.Pending) return Status;
        bool done = what switch
        {
            WaitFor.Running => _running,
            WaitFor.Boot => _booted || restored && _running,
            WaitFor.Agent => _agent,
            _ => true,
        };
        Progress = _agent ? "agent ready" : _booted ? "booted" : _running ? "running" : VmClientCommands.Name(state);
        if (done) return Status = WaitStatus.Done;
        if (state is VmState.Stopped or VmState.Failed)
        {
            string how = exit is null ? "" : $": {VmClientCommands.Name(exit.Kind)}{(exit.Reason.Length > 0 ? $" ({exit.Reason})" : "")}";
            return Fail($"VM {id} {(state == VmState.Failed ? "failed" : "stopped")} before it could {Waiting.Describe(what)}{how}");
        }
        if (state is VmState.Paused && what != WaitFor.Running && !_running && restored)
            return Fail($"VM {id} is paused (restored with --paused): it cannot {Waiting.Describe(what)}");
        return Status;
    }

    private WaitStatus Fail(string message)
    {
        if (Status != WaitStatus.Pending) return Status;
        Failure = message;
        return Status = WaitStatus.Failed;
    }
}

/// <summary>Shows a wait: a Spectre spinner on stderr when it is a terminal, else a line per change on stderr.</summary>
internal sealed class WaitProgress
{
    private readonly string _id;
    private readonly WaitFor _what;
    private readonly IAnsiConsole? _terminal;
    private string _last = "";

    private WaitProgress(string id, WaitFor what, IAnsiConsole? terminal) => (_id, _what, _terminal) = (id, what, terminal);

    public static WaitProgress Create(string id, WaitFor what) => new(id, what,
        Console.IsErrorRedirected ? null : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }));

    public async Task<T> RunAsync<T>(Func<Action<string>, Task<T>> body)
    {
        string title = $"waiting for VM {_id} to {Waiting.Describe(_what)}";
        if (_terminal is null)
        {
            Console.Error.WriteLine($"firesharp: {title}");
            return await body(Note).ConfigureAwait(false);
        }
        return await _terminal.Status().Spinner(Spinner.Known.Dots).StartAsync(Markup.Escape(title) + "...", ctx => body(progress =>
        {
            Note(progress);
            ctx.Status(Markup.Escape($"{title}... ({progress})"));
        })).ConfigureAwait(false);
    }

    /// <summary>Notes a progress change (printed as a line when not on a terminal).</summary>
    public void Note(string progress)
    {
        if (progress == _last) return;
        _last = progress;
        if (_terminal is null) Console.Error.WriteLine($"firesharp: VM {_id}: {progress}");
    }
}
