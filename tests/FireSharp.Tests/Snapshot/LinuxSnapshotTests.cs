using System.Text;
using FireSharp.Devices.Legacy;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// A real Linux guest (kernel-config/ + rootfs/) snapshotted once at boot-done and restored as three
/// concurrent clones, driven through their consoles. (The shared fixture, with the guest agent
/// over vsock, needs the agent and virtio-vsock; this test stands in for it with the serial console.)
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class LinuxSnapshotTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(8), CloneTimeout = TimeSpan.FromMinutes(3);
    private const string Cmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet";

    private static string GuestFile(string name)
    {
        var path = Path.Combine(TestPaths.RepoRoot, "build", "guest", name);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} is missing: run `make kernel rootfs` (make test does this)", path);
        return path;
    }

    private static string Tail(string text) => text.Length > 2000 ? text[^2000..] : text;

    [SkippableFact]
    public void LinuxClonesFromOneSnapshotEachSeeOnlyTheirOwnWrites()
    {
        KvmTestSupport.RequireKvm();
        string dir = Path.Combine(SnapshotTestSupport.TempDir(), "linux");
        var bootConsole = new MemorySerialSink();
        using (var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = GuestFile("vmlinux"),
            InitrdPath = GuestFile("initramfs.cpio"),
            Cmdline = Cmdline,
            MemoryMib = 256,
            Serial = bootConsole,
        }))
        {
            vm.Start();
            bool booted = SpinWait.SpinUntil(() => vm.BootTimer.BootDone is not null || vm.Exited.IsCompleted, BootTimeout);
            Assert.True(booted && !vm.Exited.IsCompleted, $"no boot-done signal; console:\n{Tail(bootConsole.GetText())}");
            var result = SnapshotWriter.Create(vm, dir, resume: false);
            Assert.True(result.MemoryBytesWritten < result.MemoryBytes / 2, "memory file is not sparse");
            Assert.Contains("FIRESHARP-INIT-OK", bootConsole.GetText());
        }

        var consoles = Enumerable.Range(0, 3).Select(_ => new MemorySerialSink()).ToArray();
        var clones = new List<MicroVm>();
        try
        {
            foreach (var c in consoles) clones.Add(MicroVm.Restore(dir, new RestoreOverrides { Serial = c }));
            // Each clone continues the boot from the snapshot point and reaches its shell.
            for (int i = 0; i < 3; i++)
            {
                int k = i;
                Assert.True(SpinWait.SpinUntil(() => consoles[k].GetText().Contains("# ") || clones[k].Exited.IsCompleted, CloneTimeout),
                    $"clone {k} shows no shell prompt; console:\n{Tail(consoles[k].GetText())}");
                Assert.False(clones[k].Exited.IsCompleted, $"clone {k} ended: {(clones[k].Exited.IsCompleted ? clones[k].Exited.Result : null)}");
            }
            // Each writes its own file into its (private, RAM-backed) /tmp and reads back what is there.
            for (int i = 0; i < 3; i++)
                Type(clones[i], $"echo clone-{i}-$((700+{i})) > /tmp/mine; cat /tmp/*; echo DONE-$((800+{i}))\n");
            for (int i = 0; i < 3; i++)
            {
                int k = i;
                Assert.True(SpinWait.SpinUntil(() => consoles[k].GetText().Contains($"DONE-{800 + k}"), CloneTimeout),
                    $"clone {k} did not run the command; console:\n{Tail(consoles[k].GetText())}");
            }
            for (int i = 0; i < 3; i++)
            {
                string text = consoles[i].GetText();
                Assert.Contains($"clone-{i}-{700 + i}", text); // its own write (the shell computed it)
                for (int j = 0; j < 3; j++)
                    if (j != i) Assert.DoesNotContain($"clone-{j}-{700 + j}", text); // and nobody else's
                Assert.DoesNotContain("FIRESHARP-INIT-OK", text); // continued, not rebooted
            }
            foreach (var c in clones) Type(c, "reboot -f\n");
            foreach (var c in clones)
            {
                Assert.True(c.Exited.Wait(CloneTimeout), "clone did not reboot");
                Assert.Equal(VmExitKind.Reset, c.Exited.Result.Kind);
            }
        }
        finally
        {
            foreach (var c in clones) c.Dispose();
        }
    }

    private static void Type(MicroVm vm, string line)
    {
        var bytes = Encoding.ASCII.GetBytes(line).AsSpan();
        while (!bytes.IsEmpty)
        {
            int n = vm.Serial.EnqueueInput(bytes);
            bytes = bytes[n..];
            if (n == 0) Thread.Sleep(10);
        }
    }
}
