using System.Text.RegularExpressions;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Architecture;

/// <summary>
/// "No file over about 400 lines without a reason stated in its header comment." The convention that makes the
/// reason machine-checkable: the file's first line is a <c>//</c> comment that starts with "Over 400 lines:" (or
/// "Just over 400 lines:") and goes on to say why, e.g.
/// <c>// Over 400 lines: the 16550 is one register-level state machine ...</c>.
/// </summary>
public sealed partial class SourceFileSizeTests
{
    internal const int MaxLinesWithoutReason = 400;

    [GeneratedRegex(@"^// (Just o|O)ver 400 lines: \S.{20,}$")]
    private static partial Regex ReasonHeader();

    /// <summary>The line count and first line of every .cs file under src/ (generated code in obj/ and bin/ excluded).</summary>
    private static IEnumerable<(string Path, int Lines, string FirstLine)> SourceFiles()
    {
        var src = Path.Combine(TestPaths.RepoRoot, "src");
        foreach (var path in Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(TestPaths.RepoRoot, path);
            if (rel.Contains("/obj/", StringComparison.Ordinal) || rel.Contains("/bin/", StringComparison.Ordinal)) continue;
            var lines = File.ReadAllLines(path);
            yield return (rel, lines.Length, lines.Length > 0 ? lines[0] : "");
        }
    }

    internal static bool StatesWhyItIsLong(string firstLine) => ReasonHeader().IsMatch(firstLine);

    [Fact]
    public void Every_source_file_over_400_lines_states_why_on_its_first_line()
    {
        var files = SourceFiles().ToList();
        Assert.True(files.Count > 100, $"found only {files.Count} source files under src/");
        var unexplained = files.Where(f => f.Lines > MaxLinesWithoutReason && !StatesWhyItIsLong(f.FirstLine))
            .Select(f => $"{f.Path} ({f.Lines} lines)").ToList();
        Assert.True(unexplained.Count == 0,
            "over 400 lines without \"// Over 400 lines: <why>\" on line 1 (split it by responsibility, or say why not): "
            + string.Join(", ", unexplained));
    }

    [Theory]
    [InlineData("// Over 400 lines: the 16550 is one register-level state machine (DLAB, FIFO)", true)]
    [InlineData("// Just over 400 lines: the connection table, routing and the listener share one lock", true)]
    [InlineData("// Over 400 lines:", false)]
    [InlineData("// Over 400 lines: long", false)]
    [InlineData("using System.Diagnostics;", false)]
    [InlineData("/// <summary>Over 400 lines: a doc comment is not the header convention</summary>", false)]
    public void The_header_convention_needs_the_marker_and_a_reason(string firstLine, bool accepted) =>
        Assert.Equal(accepted, StatesWhyItIsLong(firstLine));
}
