namespace FireSharp.Worker.Protocol;

/// <summary>
/// How a worker process tells the daemon it is up: started with its stdout on a pipe, it writes
/// <see cref="ReadyLine"/> and a newline there once its socket accepts connections, then closes the pipe
/// (its later output goes to its log file). End of file without the line means the worker failed.
/// </summary>
public static class WorkerStartup
{
    public const string ReadyLine = "ready";
}
