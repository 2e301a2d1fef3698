namespace FireSharp.Tests.Support;

/// <summary>Locates the repository and the build products the tests use (tiny guests, kernel, rootfs).</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "FireSharp.sln"))) return dir.FullName;
        // Built elsewhere (--artifacts-path): fall back to where the sources were at build time.
        var baked = typeof(TestPaths).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "RepoRoot")?.Value;
        if (baked is not null && File.Exists(Path.Combine(baked, "FireSharp.sln"))) return baked;
        throw new InvalidOperationException("cannot find the repository root (FireSharp.sln) above " + AppContext.BaseDirectory);
    }

    /// <summary>A tiny guest built by `make guests`; a missing one fails the test with the fix.</summary>
    public static string Guest(string name)
    {
        var path = Path.Combine(RepoRoot, "build", "guests", name + ".elf");
        if (!File.Exists(path))
            throw new FileNotFoundException($"tiny guest {path} is missing: run `make guests` (make test does this)", path);
        return path;
    }

    public static string TempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "firesharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
