using Microsoft.Extensions.Logging;
using Serilog.Events;

namespace FireSharp.Daemon.Hosting;

/// <summary>
/// The one log-level vocabulary of <c>firesharp run --log-level</c> and <c>firesharp serve</c>'s <c>LogLevel</c>:
/// Microsoft.Extensions.Logging's names (Trace, Debug, Information, Warning, Error, Critical, None), any case,
/// with Serilog's names and the usual short forms as aliases (Verbose = Trace, Fatal = Critical, Info, Warn).
/// </summary>
public static class LogLevels
{
    public const string Names = "trace, debug, information, warning, error, critical, none (aliases: verbose, info, warn, fatal)";

    public static bool TryParse(string? text, out LogLevel level)
    {
        switch (text?.Trim().ToLowerInvariant())
        {
            case "trace" or "verbose": level = LogLevel.Trace; return true;
            case "debug": level = LogLevel.Debug; return true;
            case "information" or "info": level = LogLevel.Information; return true;
            case "warning" or "warn": level = LogLevel.Warning; return true;
            case "error": level = LogLevel.Error; return true;
            case "critical" or "fatal": level = LogLevel.Critical; return true;
            case "none": level = LogLevel.None; return true;
            default: level = LogLevel.None; return false;
        }
    }

    /// <summary>The daemon's Serilog level for a level name (None: only fatal events).</summary>
    public static LogEventLevel ToSerilog(LogLevel level) => level switch
    {
        LogLevel.Trace => LogEventLevel.Verbose,
        LogLevel.Debug => LogEventLevel.Debug,
        LogLevel.Information => LogEventLevel.Information,
        LogLevel.Warning => LogEventLevel.Warning,
        LogLevel.Error => LogEventLevel.Error,
        _ => LogEventLevel.Fatal,
    };
}
