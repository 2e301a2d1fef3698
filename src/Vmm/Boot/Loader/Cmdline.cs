using System.Text;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>The kernel command line: UTF-8 bytes plus a NUL, at most <see cref="BootLayout.CmdlineMaxBytes"/> in all.</summary>
public static class Cmdline
{
    /// <summary>
    /// Encodes <paramref name="cmdline"/> and checks it: a NUL inside is <see cref="BootErrorReason.CommandLineInvalid"/>,
    /// more than <paramref name="maxBytes"/> bytes including the terminating NUL is <see cref="BootErrorReason.CommandLineTooLong"/>.
    /// Returns the bytes without the NUL.
    /// </summary>
    public static byte[] Encode(string cmdline, int maxBytes = BootLayout.CmdlineMaxBytes)
    {
        ArgumentNullException.ThrowIfNull(cmdline);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1);
        var bytes = Encoding.UTF8.GetBytes(cmdline);
        int nul = Array.IndexOf(bytes, (byte)0);
        if (nul >= 0)
            throw new BootException(BootErrorReason.CommandLineInvalid, $"kernel command line contains a NUL character at byte {nul}");
        if (bytes.Length + 1 > maxBytes)
            throw new BootException(BootErrorReason.CommandLineTooLong,
                $"kernel command line is {bytes.Length} bytes (+1 NUL); the limit is {maxBytes} bytes including the NUL");
        return bytes;
    }

    /// <summary>Writes the checked command line and its NUL at <paramref name="gpa"/>; returns its length without the NUL.</summary>
    public static int Write(GuestMemory mem, ulong gpa, string cmdline, int maxBytes = BootLayout.CmdlineMaxBytes)
    {
        ArgumentNullException.ThrowIfNull(mem);
        var bytes = Encode(cmdline, maxBytes);
        var dst = mem.GetSpan(gpa, bytes.Length + 1);
        bytes.CopyTo(dst);
        dst[^1] = 0;
        return bytes.Length;
    }
}
