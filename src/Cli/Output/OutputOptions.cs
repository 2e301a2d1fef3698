using System.CommandLine;

namespace FireSharp.Cli.Output;

/// <summary>What a command prints: <c>-o table|wide|json|yaml|name</c>.</summary>
public enum OutputFormat
{
    /// <summary>A table (a list) or key/value lines (one object): fitted to a terminal, plain aligned columns when piped.</summary>
    Table,

    /// <summary>As <see cref="Table"/> with more columns.</summary>
    Wide,

    /// <summary>Protobuf JSON with the proto field names; a list is <c>{"items": [...]}</c>.</summary>
    Json,

    /// <summary>The JSON as YAML.</summary>
    Yaml,

    /// <summary>Only the ids or names, one a line (also <c>-q</c>).</summary>
    Name,
}

/// <summary>
/// The output options every client command group takes (recursive, so <c>firesharp vm -o json ls</c> and
/// <c>firesharp vm ls -o json</c> both work): <c>-o/--output</c>, <c>-q/--quiet</c> and the hidden <c>--json</c>
/// (= <c>-o json</c>, kept for scripts written before <c>-o</c>). Add <see cref="All"/> to a command; read the
/// choice with <see cref="Printer.For"/>.
/// </summary>
public static class OutputOptions
{
    public static readonly Option<string> Output = MakeOutput();

    public static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "print only ids/names (as -o name)", Recursive = true };

    public static readonly Option<bool> Json = new("--json") { Description = "as -o json", Recursive = true, Hidden = true };

    public static Option[] All => [Output, Quiet, Json];

    private static Option<string> MakeOutput()
    {
        var o = new Option<string>("--output", "-o")
        {
            Description = "output format: table, wide, json, yaml or name",
            Recursive = true,
            DefaultValueFactory = _ => "table",
            HelpName = "table|wide|json|yaml|name",
        };
        o.AcceptOnlyFromAmong("table", "wide", "json", "yaml", "name");
        return o;
    }

    /// <summary>The format asked for; <c>-q</c> wins, then <c>--json</c>, then <c>-o</c>.</summary>
    public static OutputFormat Format(ParseResult parse)
    {
        if (parse.GetValue(Quiet)) return OutputFormat.Name;
        if (parse.GetValue(Json)) return OutputFormat.Json;
        return parse.GetValue(Output) switch
        {
            "wide" => OutputFormat.Wide,
            "json" => OutputFormat.Json,
            "yaml" => OutputFormat.Yaml,
            "name" => OutputFormat.Name,
            _ => OutputFormat.Table,
        };
    }
}
