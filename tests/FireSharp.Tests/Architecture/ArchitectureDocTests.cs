using FireSharp.Tests.Support;

namespace FireSharp.Tests.Architecture;

/// <summary>The text that describes the layering keeps up with it.</summary>
public sealed class ArchitectureDocTests
{
    [Theory]
    [MemberData(nameof(LayeringTests.Projects), MemberType = typeof(LayeringTests))]
    public void Every_project_of_the_layering_has_a_row_in_the_architecture_table(string project)
    {
        var doc = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "docs", "architecture.md"));
        Assert.Contains($"\n| `{project}` (", doc, StringComparison.Ordinal);
    }

    /// <summary>
    /// The namespaces and folders of the single assembly before the split (FireSharp.Api.*, src/Vmm/Api) are gone;
    /// no comment, README or proto may send a reader there.
    /// </summary>
    [Fact]
    public void No_source_or_readme_names_the_retired_api_namespace_or_folder()
    {
        string[] retired = ["FireSharp.Api.", "FireSharp.Api ", "src/Vmm/Api"];
        var roots = new[] { "src", "docs", "tests/FireSharp.Tests", "tests/fuzz" }.Select(r => Path.Combine(TestPaths.RepoRoot, r));
        var files = roots.Where(Directory.Exists)
            .SelectMany(r => Directory.EnumerateFiles(r, "*", SearchOption.AllDirectories))
            .Where(f => !f.Contains("/obj/", StringComparison.Ordinal) && !f.Contains("/bin/", StringComparison.Ordinal))
            .Where(f => Path.GetExtension(f) is ".cs" or ".md" or ".proto" or ".csproj" or ".props")
            .Where(f => Path.GetFileName(f) != nameof(ArchitectureDocTests) + ".cs")
            .ToList();
        Assert.True(files.Count > 100, $"only {files.Count} files found");
        var stale = files.SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(x => retired.Any(r => x.line.Contains(r, StringComparison.Ordinal)))
            .Select(x => $"{Path.GetRelativePath(TestPaths.RepoRoot, x.f)}:{x.i + 1}").ToList();
        Assert.True(stale.Count == 0, "names FireSharp.Api / src/Vmm/Api: " + string.Join(", ", stale));
    }
}
