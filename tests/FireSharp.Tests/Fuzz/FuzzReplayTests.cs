using FireSharp.Fuzz;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Fuzz;

/// <summary>
/// CI's share of the fuzzing (issue 18): every committed seed (tests/fuzz/corpus/&lt;target&gt;) and every saved
/// crash input (tests/fuzz/crashes/&lt;target&gt;) runs through the same target code the fuzzer runs. Each must be
/// accepted or refused with the target's typed error, so a fixed crash stays fixed.
/// </summary>
public sealed class FuzzReplayTests
{
    private static string FuzzDir => Path.Combine(TestPaths.RepoRoot, "tests", "fuzz");

    public static TheoryData<string> Targets => [.. FuzzTargets.All.Select(t => t.Name)];

    private static IEnumerable<string> Inputs(string kind, string target)
    {
        var dir = Path.Combine(FuzzDir, kind, target);
        return Directory.Exists(dir)
            ? Directory.EnumerateFiles(dir).Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal)
            : [];
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Corpus_and_saved_crashes_end_accepted_or_with_a_typed_error(string name)
    {
        var target = FuzzTargets.Get(name);
        var corpus = Inputs("corpus", name).ToList();
        Assert.NotEmpty(corpus);
        Assert.True(Directory.Exists(Path.Combine(FuzzDir, "crashes", name)), $"tests/fuzz/crashes/{name} is missing");
        foreach (var file in corpus.Concat(Inputs("crashes", name)))
        {
            var e = Record.Exception(() => target.Run(File.ReadAllBytes(file)));
            Assert.True(e is null, $"{Path.GetRelativePath(TestPaths.RepoRoot, file)}: {e}");
        }
    }

    [Fact]
    public void Every_seed_is_valid_and_committed()
    {
        foreach (var (target, name, bytes) in Seeds.All())
        {
            // A seed is a valid input: the fuzzer starts from the paths that accept it.
            Assert.Null(FuzzTargets.Get(target).Run(bytes));
            Assert.True(File.Exists(Path.Combine(FuzzDir, "corpus", target, name)), $"seed {target}/{name} is not in tests/fuzz/corpus (run `FireSharp.Fuzz seed tests/fuzz/corpus`)");
        }
    }

    [Fact]
    public void Corpus_and_crash_directories_name_only_targets()
    {
        var names = FuzzTargets.All.Select(t => t.Name).ToHashSet();
        foreach (var kind in new[] { "corpus", "crashes" })
            foreach (var dir in Directory.EnumerateDirectories(Path.Combine(FuzzDir, kind)))
                Assert.Contains(Path.GetFileName(dir), names);
    }
}
