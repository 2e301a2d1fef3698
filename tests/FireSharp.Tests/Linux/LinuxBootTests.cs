using FireSharp.Boot;
using FireSharp.Devices.Legacy;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Linux;

/// <summary>
/// Real Linux guests (kernel-config/ + rootfs/), booted by FireSharp. Slow on PVM hosts (tens of seconds
/// per boot, all kernel code emulated): tagged Slow so `make test-fast` leaves them out.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class LinuxBootTests
{
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(8);
    private const string BaseCmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd";

    private static string GuestFile(string name)
    {
        var path = Path.Combine(TestPaths.RepoRoot, "build", "guest", name);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} is missing: run `make kernel rootfs` (make test does this)", path);
        return path;
    }

    private static (VmExit Exit, string Console, MicroVm Vm) Boot(string kernel, string extraCmdline, int vcpus = 1)
    {
        KvmTestSupport.RequireKvm();
        var console = new MemorySerialSink();
        var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = GuestFile(kernel),
            InitrdPath = GuestFile("initramfs.cpio"),
            Cmdline = $"{BaseCmdline} {extraCmdline}",
            MemoryMib = 256,
            Vcpus = vcpus,
            Serial = console,
        });
        vm.Start();
        bool ended = vm.Exited.Wait(BootTimeout);
        if (!ended) vm.Stop();
        Assert.True(ended, $"guest did not finish within {BootTimeout}; console tail:\n{Tail(console.GetText())}");
        return (vm.Exited.Result, console.GetText(), vm);
    }

    private static string Tail(string text) => text.Length > 3000 ? text[^3000..] : text;

    [SkippableFact]
    public void VmlinuxReachesInitRunsBusyboxAndEndsCleanly()
    {
        var (exit, console, vm) = Boot("vmlinux", "firesharp.script=1 firesharp.poweroff=1");
        using (vm)
        {
            Assert.True(console.Contains("FIRESHARP-INIT-OK"), Tail(console));
            Assert.True(console.Contains("SELFTEST-OK"), Tail(console));
            Assert.Contains("selftest: uname: Linux 6.1", console);
            Assert.Contains("selftest: cpus: 1", console);
            Assert.Equal(VmExitKind.PowerOff, exit.Kind); // poweroff -f: "reboot: Power down" on the console
            Assert.True(exit.IsClean, exit.ToString());
            Assert.NotNull(vm.BootTimer.BootDone); // /init wrote 123 to 0xC0000000
            Assert.Equal(BootEntryMode.Linux64, vm.Plan.Mode);
        }
    }

    /// <summary>
    /// Two vCPUs through the MP table. On PVM hosts this needs the hypercall-based KVM PV features
    /// hidden (PvmQuirks): with them, the AP hung in __send_ipi_mask during bring-up.
    /// </summary>
    [SkippableFact]
    public void TwoVcpusComeUp()
    {
        var (exit, console, vm) = Boot("vmlinux", "firesharp.script=1 firesharp.reboot=1", vcpus: 2);
        using (vm)
        {
            Assert.True(console.Contains("smp: Brought up 1 node, 2 CPUs"), Tail(console));
            Assert.Contains("selftest: cpus: 2", console);
            Assert.True(console.Contains("SELFTEST-OK"), Tail(console));
            Assert.Equal(VmExitKind.Reset, exit.Kind);
        }
    }

    [SkippableFact]
    public void BzImageReachesInitAndRebootEndsTheVm()
    {
        var (exit, console, vm) = Boot("bzImage", "firesharp.reboot=1");
        using (vm)
        {
            Assert.True(console.Contains("FIRESHARP-INIT-OK"), Tail(console));
            Assert.Equal(VmExitKind.Reset, exit.Kind);
            Assert.Equal(KernelFormat.BzImage, vm.Plan.Kernel.Format);
        }
    }

    [SkippableFact]
    public void DrivesWithAKernelLackingVirtioMmioCmdlineDevicesIsAClearError()
    {
        KvmTestSupport.RequireKvm();
        var bytes = File.ReadAllBytes(GuestFile("vmlinux"));
        var marker = System.Text.Encoding.ASCII.GetBytes("virtio_mmio.device\0");
        int at = bytes.AsSpan().IndexOf(marker);
        Assert.True(at >= 0, "the project's vmlinux should support virtio-mmio command-line devices");
        System.Text.Encoding.ASCII.GetBytes("virtio_mmio.XXXXXX").CopyTo(bytes, at);
        string dir = TestPaths.TempDir();
        string kernel = Path.Combine(dir, "vmlinux-novirtio"), disk = Path.Combine(dir, "disk.img");
        File.WriteAllBytes(kernel, bytes);
        File.WriteAllBytes(disk, new byte[1 << 20]);
        var e = Assert.Throws<BootException>(() => MicroVm.Create(new VmSpec
        {
            KernelPath = kernel,
            MemoryMib = 256,
            Drives = [FireSharp.Devices.Virtio.DriveSpec.Parse(disk)],
        }));
        Assert.Equal(BootErrorReason.KernelLacksVirtioMmioCmdline, e.Reason);
        Directory.Delete(dir, recursive: true);
    }
}
