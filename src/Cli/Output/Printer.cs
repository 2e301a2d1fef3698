using System.CommandLine;
using System.Globalization;
using Google.Protobuf;
using Spectre.Console;

namespace FireSharp.Cli.Output;

/// <summary>A column of a list: its header, its text, whether only <c>-o wide</c> shows it, and optional terminal markup.</summary>
public sealed record Column<T>(string Header, Func<T, string> Text, bool WideOnly = false, Func<T, string>? Markup = null);

/// <summary>
/// Prints what a command got back in the format asked for (<see cref="OutputOptions"/>): a list of messages, one
/// message with its key/value view, or one message with a line of text (a deletion, a snapshot). JSON and YAML
/// are always <see cref="ProtoJson"/>'s shape. Commands of other helpers (logs, config) use it the same way:
/// <c>Printer.For(parse).List(items, x =&gt; x.Id, columns)</c>.
/// </summary>
public sealed class Printer
{
    private readonly TextWriter _out;
    private readonly IAnsiConsole? _console;

    public Printer(OutputFormat format, TextWriter output, bool terminal, int? width = null)
    {
        Format = format;
        _out = output;
        IsTerminal = terminal;
        if (terminal)
        {
            _console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
            if ((width ?? TerminalWidth()) is { } w) _console.Profile.Width = w;
        }
    }

    /// <summary>The printer for a command's parse result, writing to stdout (a terminal unless redirected).</summary>
    public static Printer For(ParseResult parse) => new(OutputOptions.Format(parse), Console.Out, !Console.IsOutputRedirected);

    public OutputFormat Format { get; }

    public bool IsTerminal { get; }

    /// <summary>True for JSON and YAML (what scripts read).</summary>
    public bool IsStructured => Format is OutputFormat.Json or OutputFormat.Yaml;

    /// <summary><c>$COLUMNS</c> when it is a positive number (a terminal's width otherwise comes from the terminal).</summary>
    public static int? TerminalWidth() =>
        int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), NumberStyles.None, CultureInfo.InvariantCulture, out int c) && c > 0 ? c : null;

    /// <summary>A list: <c>{"items": [...]}</c>, names, or a table of <paramref name="columns"/> (those with WideOnly for <c>-o wide</c>).</summary>
    public void List<T>(IReadOnlyCollection<T> items, Func<T, string> name, IReadOnlyList<Column<T>> columns) where T : IMessage
    {
        switch (Format)
        {
            case OutputFormat.Json: _out.WriteLine(ProtoJson.Items(items.Cast<IMessage>())); return;
            case OutputFormat.Yaml: _out.Write(Yaml.FromJson(ProtoJson.ItemsCompact(items.Cast<IMessage>()))); return;
            case OutputFormat.Name: foreach (var i in items) _out.WriteLine(name(i)); return;
        }
        var shown = columns.Where(c => !c.WideOnly || Format == OutputFormat.Wide).ToList();
        var table = new TextTable([.. shown.Select(c => c.Header)]);
        foreach (var i in items)
            table.Add([.. shown.Select(c => c.Text(i))], [.. shown.Select(c => c.Markup?.Invoke(i))]);
        Write(table);
    }

    /// <summary>One message: its JSON/YAML, its name, or key/value rows that <paramref name="details"/> adds.</summary>
    public void Item(IMessage message, string name, Action<Details> details)
    {
        if (Structured(message, name)) return;
        var d = new Details(Format == OutputFormat.Wide);
        details(d);
        if (_console is not null)
        {
            var grid = new Grid().AddColumn().AddColumn();
            foreach (var (k, v, m) in d.Rows) grid.AddRow(new Markup($"[bold]{Markup.Escape(k)}[/]"), new Markup(m ?? Markup.Escape(v.Length == 0 ? "-" : v)));
            _console.Write(grid);
            return;
        }
        int pad = d.Rows.Count == 0 ? 0 : d.Rows.Max(r => r.Key.Length) + 3;
        foreach (var (k, v, _) in d.Rows) _out.WriteLine((k + ":").PadRight(pad) + Flatten(v));
    }

    /// <summary>One message whose human form is a line of text (deleted, snapshot written, ...).</summary>
    public void Message(IMessage message, string name, string text)
    {
        if (Structured(message, name)) return;
        _out.WriteLine(text);
    }

    /// <summary>One message of a stream: JSON compact on one line (JSON Lines), YAML as a document, else the text.</summary>
    public void StreamItem(IMessage message, string name, string text)
    {
        switch (Format)
        {
            case OutputFormat.Json: _out.WriteLine(ProtoJson.Compact(message)); break;
            case OutputFormat.Yaml: _out.Write("---\n" + Yaml.FromJson(ProtoJson.Compact(message))); break;
            case OutputFormat.Name: _out.WriteLine(name); break;
            default: _out.WriteLine(text); break;
        }
        _out.Flush();
    }

    private bool Structured(IMessage message, string name)
    {
        switch (Format)
        {
            case OutputFormat.Json: _out.WriteLine(ProtoJson.Format(message)); return true;
            case OutputFormat.Yaml: _out.Write(Yaml.FromJson(ProtoJson.Compact(message))); return true;
            case OutputFormat.Name: _out.WriteLine(name); return true;
            default: return false;
        }
    }

    private void Write(TextTable table)
    {
        if (_console is not null) _console.Write(table.ToRenderable());
        else _out.Write(table.ToPlainText());
    }

    /// <summary>"firesharp vm create": the command a parse result is for (for hints).</summary>
    public static string CommandPathOf(ParseResult parse)
    {
        var names = new List<string>();
        for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(r.Command is RootCommand ? "firesharp" : r.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    private static string Flatten(string s) => s.Length == 0 ? "-" : string.Join(' ', s.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries)).TrimEnd();

    /// <summary>The key/value rows of one object's table view.</summary>
    public sealed class Details(bool wide)
    {
        internal List<(string Key, string Value, string? Markup)> Rows { get; } = [];

        /// <summary>True for <c>-o wide</c>: add the rows only it shows.</summary>
        public bool Wide { get; } = wide;

        public Details Row(string key, string value, string? markup = null)
        {
            Rows.Add((key, value, markup));
            return this;
        }
    }
}
