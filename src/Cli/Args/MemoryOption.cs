using System.CommandLine;
using System.CommandLine.Parsing;

namespace FireSharp.Cli.Args;

/// <summary>
/// The one memory flag: <c>--mem SIZE</c> (<see cref="Size"/>: <c>512M</c>, <c>1G</c>, <c>1GiB</c>; a bare number is
/// MiB), with the older spellings <c>--mem-mib</c> and <c>--memory</c> accepted, hidden, for a release. A bad value
/// is a parse error: one line, exit 2.
/// </summary>
public sealed class MemoryOption
{
    private readonly long _defaultMib;
    private readonly Option<long?>[] _options;

    /// <param name="defaultMib">the value without the flag (0 = not given, for updates)</param>
    public MemoryOption(long defaultMib, string description)
    {
        _defaultMib = defaultMib;
        Visible = Make("--mem", description + (defaultMib > 0 ? $" (default {defaultMib}M)" : ""), hidden: false);
        _options = [Visible, Make("--mem-mib", "as --mem", hidden: true), Make("--memory", "as --mem", hidden: true)];
    }

    public Option<long?> Visible { get; }

    /// <summary>The options to add to a command.</summary>
    public IEnumerable<Option> All => _options;

    /// <summary>The memory in MiB: the last of the spellings given, else the default.</summary>
    public long GetMib(ParseResult parse)
    {
        long? value = null;
        int position = -1;
        foreach (var o in _options)
            if (parse.GetResult(o) is { Implicit: false } r && r.IdentifierToken is { } token && parse.Tokens.ToList().IndexOf(token) is var at && at >= position)
                (value, position) = (parse.GetValue(o), at);
        return value ?? _defaultMib;
    }

    private static Option<long?> Make(string name, string description, bool hidden) => new(name)
    {
        Description = description,
        Hidden = hidden,
        HelpName = "SIZE",
        CustomParser = Parse,
    };

    private static long? Parse(ArgumentResult result)
    {
        if (result.Tokens.Count == 0) return null;
        string text = result.Tokens[^1].Value;
        string what = (result.Parent as OptionResult)?.IdentifierToken?.Value ?? "--mem";
        try
        {
            return Size.ParseMib(text, what);
        }
        catch (ArgException e)
        {
            result.AddError(e.Message + " (" + e.Hint + ")");
            return null;
        }
    }
}
