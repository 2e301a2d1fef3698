using FireSharp.Cli;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Virtio;

/// <summary><c>firesharp run --drive</c>: bad drive input is exit code 2 with a one-line error, before any VM exists.</summary>
public class VirtioCliTests
{
    private static int Run(params string[] args) =>
        CliApp.Run(["run", "--kernel", TestPaths.Guest("hello"), "--serial", Path.Combine(TestPaths.TempDir(), "console.txt"), .. args]);

    [Fact]
    public void AMissingImageIsBadInput() => Assert.Equal(2, Run("--drive", "/does/not/exist.img"));

    [Fact]
    public void BadDriveSyntaxIsBadInput() => Assert.Equal(2, Run("--drive", "disk.img:ro:rw"));

    [Fact]
    public void TheSameImageTwiceIsBadInput()
    {
        string img = Path.Combine(TestPaths.TempDir(), "a.img");
        File.WriteAllBytes(img, new byte[4096]);
        Assert.Equal(2, Run("--drive", img, "--drive", img + ":ro"));
    }

    [Fact]
    public void AnImageOfTheWrongSizeIsBadInput()
    {
        string img = Path.Combine(TestPaths.TempDir(), "odd.img");
        File.WriteAllBytes(img, new byte[4097]);
        Assert.Equal(2, Run("--drive", img));
    }
}
