using FireSharp.Kvm;

namespace FireSharp.Tests.Support;

/// <summary>
/// The one place KVM tests decide to skip. They skip only when /dev/kvm cannot be opened, and then only
/// when FIRESHARP_REQUIRE_KVM is not set: CI sets it wherever /dev/kvm exists, turning a skip into a failure.
/// </summary>
public static class KvmTestSupport
{
    private static readonly Lazy<(KvmUnavailableReason Reason, string Message)> s_probe =
        new(() => (KvmSystem.Probe(out var message), message));

    public static bool Required => Environment.GetEnvironmentVariable("FIRESHARP_REQUIRE_KVM") == "1";

    public static void RequireKvm()
    {
        var (reason, message) = s_probe.Value;
        if (reason == KvmUnavailableReason.None) return;
        if (Required)
            throw new InvalidOperationException($"FIRESHARP_REQUIRE_KVM=1 but /dev/kvm is unusable: {message}");
        Skip.If(true, $"/dev/kvm is unusable here ({message}); set FIRESHARP_REQUIRE_KVM=1 to make this a failure");
    }
}
