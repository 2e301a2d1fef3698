using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// How long a client command may take: <c>--timeout</c> when given (90, 90s, 500ms, 5m, 1h; 0 = no limit), else a
/// budget from what the command does, instead of one flat figure:
/// <list type="bullet">
///   <item>ordinary calls (get, ls, create, start, pause, rm, restore, ...): <see cref="CallBudget"/> (60 s);</item>
///   <item><c>vm stop</c>: its grace period (the daemon's 10 s when not given) plus the call budget;</item>
///   <item><c>vm exec</c>, <c>vm console</c>, <c>vm events</c>, <c>vm cp</c>: no limit (they last as long as the command,
///     the session or the file; Ctrl-C ends them);</item>
///   <item><c>snapshot create</c>, <c>fn create</c>, <c>fn update</c>: 10 minutes (guest memory or code written on the daemon's host);</item>
///   <item><c>fn invoke</c>: the function's own timeout plus <see cref="ColdStartBudget"/> (read from the function's
///     configuration first; see <see cref="InvokeAsync"/>);</item>
///   <item><c>--wait</c>: the call's budget plus <see cref="WaitBudget"/> for boot or agent (running needs none).</item>
/// </list>
/// </summary>
internal static class Deadlines
{
    public static readonly TimeSpan CallBudget = TimeSpan.FromSeconds(60);

    /// <summary>Calls that write guest memory or code images on the daemon's host.</summary>
    public static readonly TimeSpan LongCallBudget = TimeSpan.FromMinutes(10);

    /// <summary>
    /// A cold start's worst case: the daemon's boot timeout for a function VM (4 min until the agent is ready; a Linux
    /// guest boots in about a minute on a PVM host) plus its init timeout (90 s on PVM), plus slack for the pool.
    /// </summary>
    public static readonly TimeSpan ColdStartBudget = TimeSpan.FromMinutes(4) + TimeSpan.FromSeconds(90) + TimeSpan.FromSeconds(30);

    /// <summary>--wait=boot or agent: a Linux guest's boot, 1-2 minutes on a PVM host, with room to spare.</summary>
    public static readonly TimeSpan WaitBudget = TimeSpan.FromMinutes(5);

    public static readonly Option<TimeSpan?> Timeout = new("--timeout")
    {
        Description = "how long the command may take: 90, 90s, 500ms, 5m, 1h (0 = no limit; default: from what the command does or waits for)",
        Recursive = true,
        CustomParser = r => TryParse(r.Tokens[0].Value, out var t) ? t : Error(r, $"--timeout {r.Tokens[0].Value}: not a duration (90, 90s, 500ms, 5m, 1h)"),
    };

    private static TimeSpan? Error(ArgumentResult r, string message)
    {
        r.AddError(message);
        return null;
    }

    /// <summary>A duration: a number with ms, s, m or h (none: seconds). Zero is allowed (no limit).</summary>
    public static bool TryParse(string text, out TimeSpan value)
    {
        value = default;
        text = text.Trim();
        (string number, double unit) = text switch
        {
            _ when text.EndsWith("ms", StringComparison.OrdinalIgnoreCase) => (text[..^2], 0.001),
            _ when text.EndsWith('s') || text.EndsWith('S') => (text[..^1], 1),
            _ when text.EndsWith('m') || text.EndsWith('M') => (text[..^1], 60),
            _ when text.EndsWith('h') || text.EndsWith('H') => (text[..^1], 3600),
            _ => (text, 1),
        };
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || n < 0 || double.IsInfinity(n) || n * unit > 86400 * 365)
            return false;
        value = TimeSpan.FromSeconds(n * unit);
        return true;
    }

    /// <summary>The --timeout given on the command line (zero: no limit); null when it was not given.</summary>
    public static TimeSpan? Given(ParseResult parse) => parse.GetResult(Timeout) is { Implicit: false } ? parse.GetValue(Timeout) : null;

    /// <summary>The deadline of a unary call of the parsed command: --timeout, or the command's budget; null: none.</summary>
    public static DateTime? For(ParseResult parse) => At(Given(parse) ?? Budget(parse));

    /// <summary>Now plus <paramref name="limit"/>; null for no limit (null or zero).</summary>
    public static DateTime? At(TimeSpan? limit) => limit is { } t && t > TimeSpan.Zero ? DateTime.UtcNow + t : null;

    /// <summary>The budget of the parsed command when no --timeout is given (null: no limit).</summary>
    public static TimeSpan? Budget(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        string path = (parse.CommandResult.Parent as CommandResult)?.Command.Name + " " + command.Name;
        return path switch
        {
            "vm exec" or "vm console" or "vm events" or "vm cp" => null,
            "vm stop" => TimeSpan.FromSeconds(GraceSeconds(parse)) + CallBudget,
            "snapshot create" or "fn create" or "fn update" => LongCallBudget,
            "fn invoke" => TimeSpan.FromSeconds(Daemon.Functions.FunctionValidator.MaxTimeoutSeconds) + ColdStartBudget, // before the configuration is read
            _ => CallBudget,
        };
    }

    private static int GraceSeconds(ParseResult parse)
    {
        var grace = parse.CommandResult.Command.Options.FirstOrDefault(o => o.Name == "--grace") as Option<int>;
        int seconds = grace is null ? 0 : parse.GetValue(grace);
        return seconds > 0 ? seconds : 10; // StopVmRequest.grace_period_seconds: 0 means the daemon's 10 s
    }

    /// <summary>
    /// <c>fn invoke</c>'s call options: with no --timeout, the deadline is the function's timeout (from GetFunction)
    /// plus <see cref="ColdStartBudget"/>, so a cold start on a slow host is not cut off while a hung one still ends.
    /// </summary>
    public static async Task<CallOptions> InvokeAsync(ParseResult parse, FunctionService.FunctionServiceClient client, string name, CallOptions options)
    {
        if (Given(parse) is not null) return options;
        var function = await client.GetFunctionAsync(new GetFunctionRequest { Name = name }, options).ConfigureAwait(false);
        int seconds = function.Spec?.TimeoutSeconds is > 0 and var s ? s : Daemon.Functions.FunctionValidator.DefaultTimeoutSeconds;
        return options.WithDeadline(DateTime.UtcNow + TimeSpan.FromSeconds(seconds) + ColdStartBudget);
    }
}
