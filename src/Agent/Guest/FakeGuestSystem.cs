using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Guest;

/// <summary>
/// Host-test stand-in (--fake-system): logs what it would do. Power-off ends the agent process
/// with exit code 0 after logging <c>fake power-off (MODE)</c>.
/// </summary>
internal sealed class FakeGuestSystem : IGuestSystem
{
    public bool IsReal => false;

    public void Mount(string source, string target, string fsType, ulong flags, string? data) =>
        Log.Info($"fake mount {source} on {target} ({fsType}, flags 0x{flags:x})");

    public void Unmount(string target) => Log.Info($"fake umount {target}");

    public void Sync() => Log.Info("fake sync");

    public void SetHostname(string hostname) => Log.Info($"fake sethostname {hostname}");

    public void PowerOff(ShutdownMode mode)
    {
        Log.Info($"fake power-off ({mode})");
        Environment.Exit(0);
    }
}
