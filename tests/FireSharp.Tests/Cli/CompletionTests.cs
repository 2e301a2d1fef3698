using System.Diagnostics;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Cli;

/// <summary><c>firesharp completion bash|zsh</c>: scripts the shells accept, backed by the binary's [suggest] directive.</summary>
public sealed class CompletionTests
{
    [Theory]
    [InlineData("bash")]
    [InlineData("zsh")]
    public async Task The_script_is_valid_for_its_shell(string shell)
    {
        var (code, script, err) = await DaemonUnderTest.RunCliAsync(["completion", shell]);
        Assert.True(code == 0, err);
        string file = Path.Combine(TestPaths.TempDir(), "firesharp." + shell);
        await File.WriteAllTextAsync(file, script);
        // zsh is in make deps for this check.
        Assert.Equal("", Shell(shell, "-n", file));
        if (shell == "bash")
            Assert.Contains("-F _firesharp_complete firesharp", Shell("bash", "-c", $"source {file} && complete -p firesharp"));
    }

    [Fact]
    public async Task The_bash_function_completes_through_the_binary()
    {
        var (_, script, _) = await DaemonUnderTest.RunCliAsync(["completion", "bash"]);
        string file = Path.Combine(TestPaths.TempDir(), "firesharp.bash");
        await File.WriteAllTextAsync(file, script);
        // What bash sets up for "firesharp vm cr<TAB>" and "firesharp vm ls -o <TAB>".
        string Complete(string line, string[] words) => Shell("bash", "-c",
            $"source {file}; COMP_LINE='{line}'; COMP_POINT={line.Length}; COMP_WORDS=({string.Join(' ', words.Select(w => $"'{w}'"))}); " +
            $"COMP_CWORD={words.Length - 1}; _firesharp_complete; printf '%s\\n' \"${{COMPREPLY[@]}}\"");
        string binary = DaemonUnderTest.Binary;
        Assert.Equal("create", Complete($"{binary} vm cr", [binary, "vm", "cr"]).Trim());
        Assert.Equal(["json", "name", "table", "wide", "yaml"], Complete($"{binary} vm ls -o ", [binary, "vm", "ls", "-o", ""]).Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
    }

    private static string Shell(string shell, params string[] args)
    {
        var psi = new ProcessStartInfo(shell, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{shell} {string.Join(' ', args)}: {stderr}");
        return stdout;
    }
}
