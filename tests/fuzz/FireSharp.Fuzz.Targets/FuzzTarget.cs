namespace FireSharp.Fuzz;

/// <summary>
/// One fuzz target: <see cref="Run"/> feeds an arbitrary byte string to the code under test. The code under
/// test may refuse the input only with one of its typed errors (<see cref="IsRejection"/>); any other
/// exception, and a device that logs an internal failure, is a crash.
/// </summary>
public sealed class FuzzTarget(string name, string description, Action<byte[]> run, Func<Exception, bool> isRejection)
{
    public string Name { get; } = name;
    public string Description { get; } = description;
    public Func<Exception, bool> IsRejection { get; } = isRejection;

    /// <summary>
    /// Runs one input. Returns null when it was accepted, the typed error when it was refused (both a success
    /// for the fuzzer); any other exception propagates.
    /// </summary>
    public Exception? Run(byte[] input)
    {
        ArgumentNullException.ThrowIfNull(input);
        try
        {
            run(input);
            return null;
        }
        catch (Exception e) when (IsRejection(e))
        {
            return e;
        }
    }
}

/// <summary>Thrown by a target when the code under test failed without throwing (for example a device logged an internal exception).</summary>
public sealed class FuzzFailureException(string message) : Exception(message);
