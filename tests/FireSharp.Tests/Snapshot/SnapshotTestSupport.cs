using System.Diagnostics;
using FireSharp.Devices.Legacy;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Snapshot;

/// <summary>Helpers shared by the snapshot tests: the counter guest, snapshot files, child processes.</summary>
internal static class SnapshotTestSupport
{
    public static readonly TimeSpan TestTimeout = TimeSpan.FromSeconds(30);

    /// <summary>counter.elf's u64 counter (see tests/guests/counter.S).</summary>
    public const ulong CounterGpa = 0x200000;

    /// <summary>
    /// Written into the counter just before a snapshot: a restored guest that continues counts up from
    /// here, one that started over would count from 0 and stay far below it.
    /// </summary>
    public const ulong Sentinel = 0x1000_0000_0000_0000;

    [ThreadStatic] private static List<string>? t_dirs;

    /// <summary>A new temporary directory, removed again by <see cref="CleanUp"/> (the test class's Dispose).</summary>
    public static string TempDir()
    {
        string dir = TestPaths.TempDir();
        (t_dirs ??= []).Add(dir);
        return dir;
    }

    /// <summary>Removes the directories this thread's test created (snapshots are sparse, but copies need not be).</summary>
    public static void CleanUp()
    {
        if (t_dirs is null) return;
        foreach (var dir in t_dirs)
        {
            try { Directory.Delete(dir, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        t_dirs.Clear();
    }

    public static (MicroVm Vm, MemorySerialSink Console) StartCounter(ulong memMib = 32)
    {
        KvmTestSupport.RequireKvm();
        var console = new MemorySerialSink();
        var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("counter"), MemoryMib = memMib, Serial = console });
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => Counter(vm) > 1000, TestTimeout), "counter guest did not start counting");
        return (vm, console);
    }

    public static ulong Counter(MicroVm vm) => vm.Machine.Memory.Read<ulong>(CounterGpa);

    /// <summary>Counter value stored in a snapshot's memory file.</summary>
    public static ulong CounterInFile(string snapshotDir)
    {
        using var f = File.OpenHandle(Path.Combine(snapshotDir, SnapshotWriter.MemoryFileName));
        var b = new byte[8];
        RandomAccess.Read(f, b, (long)CounterGpa);
        return BitConverter.ToUInt64(b);
    }

    /// <summary>
    /// A counter guest snapshot whose counter continues from <see cref="Sentinel"/> (or a little above).
    /// The VM is left paused (and then disposed). Returns the snapshot directory.
    /// </summary>
    public static string TakeCounterSnapshot(ulong memMib = 32, SnapshotKey? key = null)
    {
        var (vm, console) = StartCounter(memMib);
        using (vm)
        {
            Assert.True(vm.Pause(TestTimeout));
            vm.Machine.Memory.Write(CounterGpa, Sentinel);
            string dir = Path.Combine(TempDir(), "snap");
            var result = SnapshotWriter.Create(vm, dir, resume: false, signingKey: key);
            Assert.Equal(VmState.Paused, vm.Machine.State);
            Assert.Equal(Sentinel, CounterInFile(dir));
            Assert.Equal("COUNTING\n", console.GetText());
            Assert.True(result.MemoryBytesWritten < result.MemoryBytes / 4, $"memory file not sparse: {result.MemoryBytesWritten} bytes written");
            return dir;
        }
    }

    /// <summary>
    /// Flips one bit of a state file's content and recomputes its CRC-64, as an attacker would: the file is still
    /// a valid FireSharp state file as far as the CRC can tell.
    /// </summary>
    public static byte[] FlipContentByteWithValidCrc(byte[] state, int offsetInContent)
    {
        var bytes = (byte[])state.Clone();
        bytes[SnapshotFormat.HeaderLength + offsetInContent] ^= 0x01;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(24),
            System.IO.Hashing.Crc64.HashToUInt64(bytes.AsSpan(SnapshotFormat.HeaderLength)));
        return bytes;
    }

    /// <summary>Copies a snapshot directory (its files are read-only) so a test can damage the copy.</summary>
    public static string CopySnapshot(string dir)
    {
        string copy = Path.Combine(TempDir(), "copy");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(dir))
        {
            string to = Path.Combine(copy, Path.GetFileName(f));
            File.Copy(f, to);
            if (OperatingSystem.IsLinux()) File.SetUnixFileMode(to, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        return copy;
    }

    /// <summary>How many KVM VM file descriptors this process holds ("anon_inode:kvm-vm").</summary>
    public static int KvmVmFds()
    {
        int n = 0;
        foreach (var fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is "anon_inode:kvm-vm") n++;
            }
            catch (IOException) { }
        }
        return n;
    }

    /// <summary>The firesharp executable built next to the tests (the Vmm project's apphost).</summary>
    public static string FiresharpExe()
    {
        string exe = Path.Combine(AppContext.BaseDirectory, "firesharp");
        Assert.True(File.Exists(exe), $"{exe} is missing (the Vmm project's apphost is copied next to the tests)");
        return exe;
    }

    public static Process StartFiresharp(params string[] args)
    {
        var psi = new ProcessStartInfo(FiresharpExe())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        p.StandardInput.Close();
        return p;
    }

    public static (int Code, string Stdout, string Stderr) Finish(Process p)
    {
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TestTimeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            Assert.Fail($"firesharp {string.Join(' ', p.StartInfo.ArgumentList)} did not finish in time; stderr: {stderr.Result}");
        }
        p.WaitForExit();
        int code = p.ExitCode;
        p.Dispose();
        return (code, stdout.Result, stderr.Result);
    }

    public static (int Code, string Stdout, string Stderr) RunFiresharp(params string[] args) => Finish(StartFiresharp(args));
}
