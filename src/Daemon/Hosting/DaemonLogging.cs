using Serilog;
using Serilog.Events;
using Serilog.Formatting;
using Serilog.Formatting.Compact;
using Serilog.Formatting.Display;

namespace FireSharp.Daemon.Hosting;

/// <summary>
/// The daemon's Serilog pipeline: the console (stdout) in a human format, or, under systemd's journal, each
/// line prefixed with its syslog priority <c>&lt;N&gt;</c> (journald reads it and strips it); optionally
/// also compact JSON, one event per line, to a file.
/// </summary>
public static class DaemonLogging
{
    /// <summary>systemd sets JOURNAL_STREAM when stdout/stderr go to the journal, INVOCATION_ID for any unit.</summary>
    public static bool UnderJournald =>
        !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("JOURNAL_STREAM"))
        || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("INVOCATION_ID"));

    public static Serilog.ILogger Create(DaemonOptions options)
    {
        var level = LogLevels.TryParse(options.LogLevel, out var named) ? LogLevels.ToSerilog(named) : LogEventLevel.Information;
        var config = new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", level < LogEventLevel.Warning ? LogEventLevel.Warning : level)
            .MinimumLevel.Override("Grpc", level < LogEventLevel.Warning ? LogEventLevel.Warning : level)
            .Enrich.FromLogContext();
        ITextFormatter human = UnderJournald
            ? new JournaldFormatter(new MessageTemplateTextFormatter("{SourceContext}: {Message:lj}{NewLine}{Exception}"))
            : new MessageTemplateTextFormatter("{Timestamp:yyyy-MM-dd HH:mm:ss.fff} [{Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}");
        config = config.WriteTo.Console(human);
        if (options.LogJsonFile is { } file) config = config.WriteTo.File(new CompactJsonFormatter(), file);
        return config.CreateLogger();
    }

    /// <summary>syslog priority of a level: debug 7, info 6, warning 4, err 3, crit 2.</summary>
    public static int Priority(LogEventLevel level) => level switch
    {
        LogEventLevel.Verbose or LogEventLevel.Debug => 7,
        LogEventLevel.Information => 6,
        LogEventLevel.Warning => 4,
        LogEventLevel.Error => 3,
        _ => 2,
    };
}

/// <summary>Prefixes every line of an event (exception lines too) with <c>&lt;N&gt;</c>, as journald expects.</summary>
public sealed class JournaldFormatter(ITextFormatter inner) : ITextFormatter
{
    public void Format(LogEvent logEvent, TextWriter output)
    {
        using var buffer = new StringWriter();
        inner.Format(logEvent, buffer);
        string prefix = $"<{DaemonLogging.Priority(logEvent.Level)}>";
        foreach (var line in buffer.ToString().Split('\n'))
        {
            if (line.Length == 0) continue;
            output.Write(prefix);
            output.Write(line.TrimEnd('\r'));
            output.Write('\n');
        }
    }
}
