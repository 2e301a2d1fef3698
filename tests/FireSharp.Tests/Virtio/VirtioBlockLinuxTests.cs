using System.Diagnostics;
using System.Security.Cryptography;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Virtio;

/// <summary>
/// The real Linux guest on virtio-blk, in one boot: ext4 root on /dev/vda (a private copy of rootfs.ext4 with a
/// test script added by debugfs), a data drive the guest writes a file to and syncs, and a read-only drive it
/// fails to write. The host then reads the data image with debugfs and checks the read-only image is untouched.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class VirtioBlockLinuxTests
{
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(8);
    private const string Cmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd "
        + "firesharp.script=/test.sh firesharp.poweroff=1";

    private static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"{file} did not finish");
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}");
        return stdout.Result;
    }

    [SkippableFact]
    public void GuestBootsFromExt4RootWritesADataDriveAndCannotWriteAReadOnlyDrive()
    {
        KvmTestSupport.RequireKvm();
        string kernel = Path.Combine(TestPaths.RepoRoot, "build", "guest", "vmlinux");
        string baseRoot = Path.Combine(TestPaths.RepoRoot, "build", "guest", "rootfs.ext4");
        foreach (var f in new[] { kernel, baseRoot })
            if (!File.Exists(f)) throw new FileNotFoundException($"{f} is missing: run `make kernel rootfs` (make test does this)", f);

        string dir = TestPaths.TempDir();
        try
        {
            BootAndCheck(kernel, baseRoot, dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true); // ~90 MB of images
        }
    }

    private static void BootAndCheck(string kernel, string baseRoot, string dir)
    {
        string token = Guid.NewGuid().ToString("N");

        // Root: a private copy (the cached image is a shared base) with /test.sh added.
        string root = Path.Combine(dir, "root.ext4");
        Run("cp", "--sparse=always", baseRoot, root);
        string script = Path.Combine(dir, "test.sh");
        File.WriteAllText(script, $"""
            echo T-SERIAL-$(cat /sys/block/vdb/serial)
            echo T-RO-FLAG-$(cat /sys/block/vdc/ro)
            mkdir -p /mnt/data /mnt/ro
            mount -t ext4 /dev/vdb /mnt/data && echo T-MOUNT-DATA-OK
            echo "hello from the guest {token}" > /mnt/data/hello.txt
            sync && echo T-SYNC-OK
            umount /mnt/data && echo T-UMOUNT-OK
            mount -t ext4 -o ro /dev/vdc /mnt/ro && echo T-RO-CONTENT-$(cat /mnt/ro/ro.txt)
            umount /mnt/ro
            if dd if=/dev/zero of=/dev/vdc bs=4096 count=1 conv=fsync 2>/dev/null; then echo T-RO-WRITE-SUCCEEDED; else echo T-RO-WRITE-FAILED; fi
            echo T-ROOT-$(grep ' / ' /proc/mounts | cut -d' ' -f1)
            echo T-END

            """);
        Run("debugfs", "-w", "-R", $"write {script} test.sh", root);
        Assert.Contains(token, Run("debugfs", "-R", "cat /test.sh", root));

        // Data: an empty ext4 the guest writes to.
        string data = Path.Combine(dir, "data.img");
        Run("mke2fs", "-q", "-t", "ext4", "-F", "-L", "data", data, "16M");

        // Read-only: an ext4 with one file; its bytes must not change.
        string roTree = Path.Combine(dir, "ro-tree");
        Directory.CreateDirectory(roTree);
        File.WriteAllText(Path.Combine(roTree, "ro.txt"), "readonly-contents\n");
        string ro = Path.Combine(dir, "ro.img");
        Run("mke2fs", "-q", "-t", "ext4", "-F", "-d", roTree, ro, "8M");
        byte[] roHash = SHA256.HashData(File.ReadAllBytes(ro));

        var console = new MemorySerialSink();
        string text;
        VmExit exit;
        using (var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = kernel,
            Cmdline = Cmdline,
            MemoryMib = 256,
            Serial = console,
            Drives =
            [
                new DriveSpec { Path = root, IsRoot = true },
                new DriveSpec { Path = data, Serial = "fs-data-01" },
                new DriveSpec { Path = ro, ReadOnly = true },
            ],
        }))
        {
            vm.Start();
            bool ended = vm.Exited.Wait(BootTimeout);
            if (!ended) vm.Stop();
            text = console.GetText();
            Assert.True(ended, $"guest did not finish within {BootTimeout}; console tail:\n{Tail(text)}");
            exit = vm.Exited.Result;
            var counters = vm.Blocks().Select(b => b.Counters).ToArray();
            Assert.True(counters[0].BytesRead > 0, "the root drive was never read");
            Assert.True(counters[1].BytesWritten > 0 && counters[1].Flushes > 0, "the data drive was never written and flushed");
            Assert.Equal(0, counters[2].BytesWritten);
        }

        Assert.True(exit.IsClean, $"{exit}\n{Tail(text)}");
        Assert.Contains("FIRESHARP-INIT-OK", text);
        Assert.Matches("T-ROOT-/dev/(root|vda)", text); // the kernel lists the root it mounted as /dev/root
        Assert.Contains("T-SERIAL-fs-data-01", text);
        Assert.Contains("T-RO-FLAG-1", text);
        Assert.Contains("T-MOUNT-DATA-OK", text);
        Assert.Contains("T-SYNC-OK", text);
        Assert.Contains("T-UMOUNT-OK", text);
        Assert.Contains("T-RO-CONTENT-readonly-contents", text);
        Assert.Contains("T-RO-WRITE-FAILED", text);
        Assert.Contains("T-END", text);

        Assert.Equal($"hello from the guest {token}\n", Run("debugfs", "-R", "cat /hello.txt", data));
        Assert.Equal(roHash, SHA256.HashData(File.ReadAllBytes(ro)));
    }

    private static string Tail(string text) => text.Length > 4000 ? text[^4000..] : text;
}
