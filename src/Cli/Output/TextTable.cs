using System.Globalization;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace FireSharp.Cli.Output;

/// <summary>
/// A table of text cells, printed two ways. On a terminal: a Spectre table fitted to the terminal's width
/// (<c>$COLUMNS</c> when set, else the window's), which may wrap long cells. Anywhere else (a pipe, a file):
/// plain columns aligned with spaces, every cell whole (no wrapping, no truncation, no ellipsis), empty cells as
/// <c>-</c>, line breaks and tabs in a cell as spaces, and no padding after the last column, so that
/// <c>| cat</c>, <c>| awk</c> and <c>| column -t</c> all see one row a line.
/// </summary>
public sealed class TextTable(IReadOnlyList<string> headers)
{
    private readonly List<(string[] Text, string?[] Markup)> _rows = [];

    public IReadOnlyList<string> Headers { get; } = headers;

    /// <summary>Adds a row: plain text per cell, and optional Spectre markup per cell for a terminal (null = the text).</summary>
    public void Add(string[] cells, string?[]? markup = null)
    {
        if (cells.Length != Headers.Count) throw new ArgumentException($"a row has {cells.Length} cells for {Headers.Count} columns", nameof(cells));
        _rows.Add((cells, markup ?? new string?[cells.Length]));
    }

    public int Count => _rows.Count;

    /// <summary>Plain aligned columns (what a pipe gets), each line ending in '\n'.</summary>
    public string ToPlainText(string separator = "   ")
    {
        var cells = new List<string[]> { Headers.ToArray() };
        cells.AddRange(_rows.Select(r => r.Text.Select(Clean).ToArray()));
        var widths = new int[Headers.Count];
        foreach (var row in cells)
            for (int i = 0; i < row.Length; i++) widths[i] = Math.Max(widths[i], Width(row[i]));
        var sb = new StringBuilder();
        foreach (var row in cells)
        {
            var line = new StringBuilder();
            for (int i = 0; i < row.Length; i++)
            {
                line.Append(row[i]);
                if (i < row.Length - 1) line.Append(' ', widths[i] - Width(row[i])).Append(separator);
            }
            sb.Append(line.ToString().TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>A Spectre table for a terminal.</summary>
    public IRenderable ToRenderable()
    {
        var table = new Table().Border(TableBorder.Simple);
        foreach (var h in Headers) table.AddColumn(new TableColumn(Markup.Escape(h)));
        foreach (var (text, markup) in _rows)
            table.AddRow(text.Select((t, i) => (IRenderable)new Markup(markup[i] ?? Markup.Escape(t.Length == 0 ? "-" : t))).ToArray());
        return table;
    }

    private static string Clean(string cell)
    {
        if (cell.Length == 0) return "-";
        var sb = new StringBuilder(cell.Length);
        foreach (char c in cell) sb.Append(char.IsControl(c) ? ' ' : c);
        return sb.ToString();
    }

    /// <summary>Columns a cell takes (East Asian wide characters take two).</summary>
    private static int Width(string s)
    {
        int w = 0;
        foreach (var rune in s.EnumerateRunes())
            w += rune.Value >= 0x1100 && CharUnicodeInfo.GetUnicodeCategory(rune.Value) == UnicodeCategory.OtherLetter && IsWide(rune.Value) ? 2 : 1;
        return w;
    }

    private static bool IsWide(int cp) => cp is (>= 0x1100 and <= 0x115F) or (>= 0x2E80 and <= 0xA4CF) or (>= 0xAC00 and <= 0xD7A3)
        or (>= 0xF900 and <= 0xFAFF) or (>= 0xFE30 and <= 0xFE4F) or (>= 0xFF00 and <= 0xFF60) or (>= 0xFFE0 and <= 0xFFE6) or (>= 0x20000 and <= 0x3FFFD);
}
