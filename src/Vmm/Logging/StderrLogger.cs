using Microsoft.Extensions.Logging;

namespace FireSharp.Logging;

/// <summary>
/// The foreground CLI's log sink: one line per event on stderr, so the guest console on stdout stays clean.
/// (The daemon logs through Serilog; the CLI keeps its start-up lean.)
/// </summary>
public sealed class StderrLogger(LogLevel minimum) : ILogger
{
    private static readonly Lock s_write = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum && logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        string level = logLevel switch
        {
            LogLevel.Trace => "trace", LogLevel.Debug => "debug", LogLevel.Information => "info",
            LogLevel.Warning => "warn", LogLevel.Error => "error", _ => "crit",
        };
        string line = $"firesharp [{level}] {formatter(state, exception)}{(exception is null ? "" : " — " + exception.Message)}";
        lock (s_write) Console.Error.WriteLine(line);
    }
}
