using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using FireSharp.Proto.Agent;
using Tmds.Linux;

namespace FireSharp.Agent.Guest;

/// <summary>The real thing: mount, umount2, sync, sethostname and reboot through libc.</summary>
internal sealed unsafe class LinuxGuestSystem : IGuestSystem
{
    public bool IsReal => true;

    public void Mount(string source, string target, string fsType, ulong flags, string? data)
    {
        byte* s = Native.AllocUtf8(source), t = Native.AllocUtf8(target), f = Native.AllocUtf8(fsType);
        byte* d = data is null ? null : Native.AllocUtf8(data);
        try
        {
            if (LibC.mount(s, t, f, (ulong_t)flags, d) != 0)
                throw new IOException($"mount {source} on {target} ({fsType}): {Native.ErrnoText(LibC.errno)}");
        }
        finally
        {
            NativeMemory.Free(s);
            NativeMemory.Free(t);
            NativeMemory.Free(f);
            if (d != null) NativeMemory.Free(d);
        }
    }

    public void Unmount(string target)
    {
        byte* t = Native.AllocUtf8(target);
        try
        {
            if (LibC.umount2(t, 0) == 0) return;
            int err = LibC.errno;
            if (err == LibC.EBUSY && LibC.umount2(t, LibC.MNT_DETACH) == 0) return;
            throw new IOException($"umount {target}: {Native.ErrnoText(err)}");
        }
        finally
        {
            NativeMemory.Free(t);
        }
    }

    public void Sync() => LibC.sync();

    public void SetHostname(string hostname)
    {
        byte* h = Native.AllocUtf8(hostname);
        try
        {
            if (LibC.sethostname(h, (size_t)(ulong)System.Text.Encoding.UTF8.GetByteCount(hostname)) != 0)
                throw new IOException($"sethostname {hostname}: {Native.ErrnoText(LibC.errno)}");
        }
        finally
        {
            NativeMemory.Free(h);
        }
    }

    public void PowerOff(ShutdownMode mode)
    {
        int cmd = mode == ShutdownMode.Reboot ? Native.RB_AUTOBOOT : Native.RB_POWER_OFF;
        if (Native.reboot(cmd) != 0)
            throw new IOException($"reboot({mode}): {Native.ErrnoText(Marshal.GetLastPInvokeError())}");
    }
}
