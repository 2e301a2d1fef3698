namespace FireSharp.Worker.Protocol;

/// <summary>
/// How a worker process tells the daemon it is up: started with its stdout on a pipe, it writes
/// <see cref="ReadyLine"/> and a newline there once its socket accepts connections, then closes the pipe
/// (its later output goes to its log file). End of file without the line means the worker failed.
/// A jailed worker's stage 1 that refuses the snapshot it was to restore says so instead
/// (<see cref="SnapshotRefused"/>), so the client gets the same typed error as a refusal by the daemon.
/// </summary>
public static class WorkerStartup
{
    public const string ReadyLine = "ready";

    private const string RefusedPrefix = "snapshot-refused ";

    /// <summary>The line for a snapshot refused with <paramref name="reason"/> (a SnapshotErrorReason name).</summary>
    public static string SnapshotRefused(string reason, string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return RefusedPrefix + reason + " " + message.ReplaceLineEndings(" ");
    }

    /// <summary>Parses a <see cref="SnapshotRefused"/> line.</summary>
    public static bool TryParseSnapshotRefused(string line, out string reason, out string message)
    {
        ArgumentNullException.ThrowIfNull(line);
        reason = message = "";
        if (!line.StartsWith(RefusedPrefix, StringComparison.Ordinal)) return false;
        string rest = line[RefusedPrefix.Length..];
        int space = rest.IndexOf(' ', StringComparison.Ordinal);
        if (space <= 0) return false;
        reason = rest[..space];
        message = rest[(space + 1)..];
        return true;
    }
}
