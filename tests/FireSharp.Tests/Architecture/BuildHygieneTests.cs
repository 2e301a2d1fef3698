using System.Text.Json;
using System.Xml.Linq;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Architecture;

/// <summary>
/// The build standards of docs/architecture.md ("Build standards"), checked on the files that set them, so that
/// dropping one fails a test rather than silently loosening every build: .editorconfig, global.json, central
/// package management, Nullable + AnalysisMode Recommended + warnings as errors for every project, and a NuGet
/// lock file beside every project.
/// </summary>
public sealed class BuildHygieneTests
{
    private static string Root(string relative) => Path.Combine(TestPaths.RepoRoot, relative);

    /// <summary>Every project of the repository (src, tests, examples), obj/ and bin/ aside.</summary>
    public static TheoryData<string> AllProjects()
    {
        var data = new TheoryData<string>();
        foreach (var dir in new[] { "src", "tests", "examples" })
            foreach (var p in Directory.EnumerateFiles(Root(dir), "*.csproj", SearchOption.AllDirectories)
                         .Where(p => !p.Contains("/obj/", StringComparison.Ordinal) && !p.Contains("/bin/", StringComparison.Ordinal)))
                data.Add(Path.GetRelativePath(TestPaths.RepoRoot, p));
        return data;
    }

    private static string? Property(XDocument project, string name) =>
        project.Descendants(name).Where(e => e.Parent?.Name == "PropertyGroup" && e.Attribute("Condition") is null)
            .Select(e => e.Value.Trim()).LastOrDefault();

    [Fact]
    public void An_editorconfig_at_the_root_sets_the_style_for_every_file()
    {
        var lines = File.ReadAllLines(Root(".editorconfig")).Select(l => l.Trim()).ToList();
        Assert.Contains("root = true", lines);
        Assert.Contains("[*.cs]", lines);
    }

    [Fact]
    public void Global_json_pins_the_sdk()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Root("global.json")));
        var version = json.RootElement.GetProperty("sdk").GetProperty("version").GetString();
        Assert.Matches(@"^\d+\.\d+\.\d+$", version);
    }

    [Fact]
    public void Package_versions_are_managed_centrally()
    {
        var props = XDocument.Load(Root("Directory.Packages.props"));
        Assert.Equal("true", Property(props, "ManagePackageVersionsCentrally"));
        Assert.NotEmpty(props.Descendants("PackageVersion"));
    }

    [Fact]
    public void Every_project_builds_nullable_with_recommended_analyzers_and_warnings_as_errors()
    {
        var props = XDocument.Load(Root("Directory.Build.props"));
        Assert.Equal("enable", Property(props, "Nullable"));
        Assert.Equal("Recommended", Property(props, "AnalysisMode"));
        Assert.Equal("true", Property(props, "TreatWarningsAsErrors"));
        Assert.Equal("true", Property(props, "RestorePackagesWithLockFile"));
    }

    [Theory]
    [MemberData(nameof(AllProjects))]
    public void No_project_loosens_the_build_standards(string project)
    {
        var xml = XDocument.Load(Root(project));
        var loosened = new List<string>();
        foreach (var (name, required) in new[] { ("Nullable", "enable"), ("TreatWarningsAsErrors", "true"), ("RestorePackagesWithLockFile", "true") })
            loosened.AddRange(xml.Descendants(name).Where(e => !string.Equals(e.Value.Trim(), required, StringComparison.OrdinalIgnoreCase))
                .Select(e => $"{name}={e.Value}"));
        loosened.AddRange(xml.Descendants("AnalysisMode").Where(e => e.Value.Trim() is not ("Recommended" or "All")).Select(e => $"AnalysisMode={e.Value}"));
        loosened.AddRange(xml.Descendants("WarningsNotAsErrors").Select(e => $"WarningsNotAsErrors={e.Value}"));
        Assert.True(loosened.Count == 0, $"{project} loosens the build: {string.Join(", ", loosened)}");
    }

    [Theory]
    [MemberData(nameof(AllProjects))]
    public void Every_project_has_a_lock_file(string project) =>
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(Root(project))!, "packages.lock.json")),
            $"{project} has no packages.lock.json beside it (dotnet restore --force-evaluate)");

    [Theory]
    [MemberData(nameof(AllProjects))]
    public void No_project_pins_a_package_version_of_its_own(string project)
    {
        var pinned = XDocument.Load(Root(project)).Descendants("PackageReference")
            .Where(e => e.Attribute("Version") is not null || e.Attribute("VersionOverride") is not null || e.Element("Version") is not null)
            .Select(e => e.Attribute("Include")?.Value ?? "?").ToList();
        Assert.True(pinned.Count == 0, $"{project} sets a version for {string.Join(", ", pinned)}; versions belong in Directory.Packages.props");
    }
}
