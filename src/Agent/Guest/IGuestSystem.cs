using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Guest;

/// <summary>
/// The privileged operations of the agent. <see cref="LinuxGuestSystem"/> does them (in the guest);
/// <see cref="FakeGuestSystem"/> only logs them, for the host tests (--fake-system).
/// </summary>
internal interface IGuestSystem
{
    /// <summary>True when this changes the machine (mounts, hostname, power).</summary>
    bool IsReal { get; }

    /// <summary>mount(2); throws <see cref="IOException"/> with the errno text.</summary>
    void Mount(string source, string target, string fsType, ulong flags, string? data);

    /// <summary>umount2(2), lazily (MNT_DETACH) if the file system is busy.</summary>
    void Unmount(string target);

    void Sync();

    void SetHostname(string hostname);

    /// <summary>Ends the machine (or, fake, the agent process). Returns only if that failed.</summary>
    void PowerOff(ShutdownMode mode);
}
