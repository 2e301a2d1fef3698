using System.Diagnostics;
using FireSharp.Cli;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Cli;

/// <summary><c>firesharp run</c>: exit codes, console routing and one-line errors.</summary>
[Collection("kvm")]
public class RunCommandTests
{
    private static (int Code, string Console) Run(params string[] args)
    {
        string console = Path.Combine(TestPaths.TempDir(), "console.txt");
        int code = CliApp.Run([.. args, "--serial", console]);
        // The file sink writes from a background thread and is flushed on dispose (end of Run).
        return (code, File.Exists(console) ? File.ReadAllText(console) : "");
    }

    [SkippableFact]
    public void CleanResetExitsZero()
    {
        KvmTestSupport.RequireKvm();
        var (code, console) = Run("run", "--kernel", TestPaths.Guest("hello"));
        Assert.Equal(0, code);
        Assert.Equal("Hello from FireSharp tiny guest\n", console);
    }

    [SkippableFact]
    public void TripleFaultExitsNonZero()
    {
        KvmTestSupport.RequireKvm();
        var (code, _) = Run("run", "--kernel", TestPaths.Guest("triple-fault"));
        Assert.Equal(1, code);
    }

    [Fact]
    public void AgentWithoutVsockIsBadInput()
    {
        var (code, _) = Run("run", "--kernel", TestPaths.Guest("hello"), "--agent");
        Assert.Equal(2, code);
    }

    [Fact]
    public void AgentWithRestoreIsBadInput()
    {
        string dir = TestPaths.TempDir();
        var (code, _) = Run("run", "--insecure-unauthenticated", "--restore", Path.Combine(dir, "snap"), "--vsock", Path.Combine(dir, "v.sock"), "--agent");
        Assert.Equal(2, code);
    }

    [SkippableFact]
    public void RngAddsAnEntropyDeviceTheGuestMayIgnore()
    {
        KvmTestSupport.RequireKvm();
        var (code, console) = Run("run", "--kernel", TestPaths.Guest("hello"), "--rng");
        Assert.Equal(0, code);
        Assert.Equal("Hello from FireSharp tiny guest\n", console);
    }

    [SkippableFact]
    public void RngWithRestoreIsBadInput()
    {
        string snap = FireSharp.Tests.Snapshot.SnapshotTestSupport.TakeCounterSnapshot();
        try
        {
            // The snapshot decides the devices: asking for one is refused, and the same restore without it runs.
            Assert.Equal(2, Run("run", "--insecure-unauthenticated", "--restore", snap, "--rng", "--exit-after-ms", "50").Code);
            Assert.Equal(0, Run("run", "--insecure-unauthenticated", "--restore", snap, "--exit-after-ms", "50").Code);
        }
        finally
        {
            FireSharp.Tests.Snapshot.SnapshotTestSupport.CleanUp();
        }
    }

    [Fact]
    public void MissingKernelIsBadInput()
    {
        var (code, _) = Run("run", "--kernel", "/does/not/exist.elf");
        Assert.Equal(2, code);
    }

    [Fact]
    public void AbsurdMemoryIsBadInput()
    {
        var (code, _) = Run("run", "--kernel", TestPaths.Guest("hello"), "--mem-mib", "0");
        Assert.Equal(2, code);
    }

    /// <summary>
    /// A guest FireSharp's own tests never built: 32-bit ring-0 code written here, linked with plain
    /// `ld -N` (not the project's linker script), polling the LSR and ending with the i8042 reset.
    /// </summary>
    [SkippableFact]
    public void RunsAnUnseenPvhGuest()
    {
        KvmTestSupport.RequireKvm();
        string dir = TestPaths.TempDir();
        string message = $"unseen guest {Guid.NewGuid():N}";
        File.WriteAllText(Path.Combine(dir, "g.S"), $$"""
                    .section .note.Xen, "a", @note
                    .p2align 2
                    .long 4, 4, 18
                    .asciz "Xen"
                    .long _start
                    .text
                    .code32
                    .globl _start
            _start: mov $msg, %esi
            1:      movb (%esi), %bl
                    test %bl, %bl
                    jz 3f
            2:      mov $0x3fd, %dx
                    inb %dx, %al
                    test $0x20, %al
                    jz 2b
                    mov $0x3f8, %dx
                    mov %bl, %al
                    outb %al, %dx
                    inc %esi
                    jmp 1b
            3:      mov $0xfe, %al
                    outb %al, $0x64
            4:      hlt
                    jmp 4b
            msg:    .asciz "{{message}}\n"
            """);
        Exec(dir, "as", "--64 -o g.o g.S");
        Exec(dir, "ld", "-m elf_x86_64 -nostdlib -static -N -Ttext=0x100000 -e _start -o g.elf g.o");
        var (code, console) = Run("run", "--kernel", Path.Combine(dir, "g.elf"));
        Assert.Equal(0, code);
        Assert.Equal(message + "\n", console);
    }

    private static void Exec(string dir, string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { WorkingDirectory = dir, RedirectStandardError = true })!;
        string err = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(30_000));
        Assert.True(p.ExitCode == 0, $"{file} {args}: {err}");
    }
}
