namespace FireSharp.Tests.Support;

/// <summary>Something missing (an artifact, tun, root, a tool) skips a test, or fails it under FIRESHARP_REQUIRE_KVM=1.</summary>
public sealed class TestEnvironmentTests
{
    [Fact]
    public void What_is_there_neither_skips_nor_fails()
    {
        TestEnvironment.Require(true, "nothing", required: true);
        TestEnvironment.Require(true, "nothing", required: false);
        TestEnvironment.RequireFile(typeof(TestEnvironmentTests).Assembly.Location, "it is this test assembly");
    }

    [Fact]
    public void Something_missing_skips_the_test_unless_it_is_required()
    {
        var skip = Assert.Throws<SkipException>(() => TestEnvironment.Require(false, "/x/vmlinux is missing", required: false));
        Assert.Contains("/x/vmlinux is missing", skip.Message);
        var fail = Assert.Throws<InvalidOperationException>(() => TestEnvironment.Require(false, "/x/vmlinux is missing", required: true));
        Assert.Contains("FIRESHARP_REQUIRE_KVM=1 but /x/vmlinux is missing", fail.Message);
    }
}
