namespace FireSharp.Tests.Support;

/// <summary>
/// The one place tests decide to skip for something this machine lacks other than KVM: a build artifact (kernel,
/// rootfs, binary), /dev/net/tun, root, a tool. As with <see cref="KvmTestSupport.RequireKvm"/>, a skip becomes a
/// failure under FIRESHARP_REQUIRE_KVM=1, where everything the tests need must be there.
/// </summary>
public static class TestEnvironment
{
    /// <summary>Skips (or, under FIRESHARP_REQUIRE_KVM=1, fails) unless <paramref name="available"/>; <paramref name="missing"/> says what is not.</summary>
    public static void Require(bool available, string missing) => Require(available, missing, KvmTestSupport.Required);

    internal static void Require(bool available, string missing, bool required)
    {
        if (available) return;
        if (required) throw new InvalidOperationException($"FIRESHARP_REQUIRE_KVM=1 but {missing}");
        Skip.If(true, $"{missing}; set FIRESHARP_REQUIRE_KVM=1 to make this a failure");
    }

    /// <summary>A build product the test needs; <paramref name="build"/> says how to make it.</summary>
    public static void RequireFile(string path, string build) => Require(File.Exists(path), $"{path} is missing ({build})");

    public static void RequireRoot(string why) => Require(Environment.UserName == "root", $"{why} needs root");
}
