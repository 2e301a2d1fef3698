namespace FireSharp.Cli.Args;

/// <summary>
/// A command-line value that does not parse: the message names the flag and the value, the hint shows the grammar.
/// The client plumbing turns it into exit 2 (usage) with both lines.
/// </summary>
public sealed class ArgException(string message, string hint) : ArgumentException(message)
{
    public string Hint { get; } = hint;
}
