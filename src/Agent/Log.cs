using System.Text;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Agent;

/// <summary>
/// Lines to stderr (the guest console when the agent is PID 1), written straight to fd 2: no
/// Console class, so no terminal set-up and no extra signal handlers in PID 1.
/// </summary>
internal static class Log
{
    private static readonly object Gate = new();
    private static readonly FileStream Stderr = new(new SafeFileHandle(2, ownsHandle: false), FileAccess.Write, bufferSize: 0);

    public static bool Verbose { get; set; }

    public static void Info(string message) => Write(message);

    public static void Debug(string message)
    {
        if (Verbose) Write(message);
    }

    public static void Error(string message) => Write("error: " + message);

    private static void Write(string message)
    {
        var bytes = Encoding.UTF8.GetBytes("firesharp-agent: " + message + "\n");
        lock (Gate)
        {
            try { Stderr.Write(bytes); }
            catch (IOException) { } // no console: nothing to do
        }
    }
}
