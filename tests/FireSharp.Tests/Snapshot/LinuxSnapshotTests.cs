using System.Text;
using FireSharp.Snapshot;
using FireSharp.Tests.Linux;
using FireSharp.Vm;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// A real Linux guest (the Linux fixture: booted once per machine with the agent and snapshotted,
/// <see cref="LinuxGuestFixture"/>) restored as three concurrent clones, driven through their consoles
/// (the shell /init left on ttyS0): each continues where the snapshot was taken and sees only its own writes.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
public class LinuxSnapshotTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan CloneTimeout = TimeSpan.FromMinutes(3);

    private static string Tail(string text) => text.Length > 2000 ? text[^2000..] : text;

    [SkippableFact]
    public async Task LinuxClonesFromOneSnapshotEachSeeOnlyTheirOwnWrites()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        // The memory file is sparse: most of the guest's 256 MiB was never written.
        var memory = new FileInfo(Path.Combine(fixture.SnapshotDir, SnapshotWriter.MemoryFileName));
        Assert.True(AllocatedBytes(memory.FullName) < memory.Length / 2, "memory file is not sparse");

        using var cts = new CancellationTokenSource(CloneTimeout);
        var clones = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => fixture.RestoreCloneAsync($"console{i}", reseed: false, cts.Token)));
        try
        {
            // The shell /init started on the console (it may have started after the snapshot) answers an empty line with its prompt.
            for (int i = 0; i < 3; i++)
            {
                var clone = clones[i];
                Type(clone.Vm, "\n");
                Assert.True(SpinWait.SpinUntil(() => clone.Console.GetText().Contains("# ") || clone.Vm.Exited.IsCompleted, CloneTimeout),
                    $"clone {i} shows no shell prompt; console:\n{Tail(clone.Console.GetText())}");
                Assert.False(clone.Vm.Exited.IsCompleted, $"clone {i} ended");
            }
            // Each writes its own file into its (private, RAM-backed) /tmp and reads back what is there.
            for (int i = 0; i < 3; i++)
                Type(clones[i].Vm, $"echo clone-{i}-$((700+{i})) > /tmp/mine; cat /tmp/*; echo DONE-$((800+{i}))\n");
            for (int i = 0; i < 3; i++)
            {
                var console = clones[i].Console;
                int k = i;
                Assert.True(SpinWait.SpinUntil(() => console.GetText().Contains($"DONE-{800 + k}"), CloneTimeout),
                    $"clone {k} did not run the command; console:\n{Tail(console.GetText())}");
            }
            for (int i = 0; i < 3; i++)
            {
                string text = clones[i].Console.GetText();
                Assert.Contains($"clone-{i}-{700 + i}", text); // its own write (the shell computed it)
                for (int j = 0; j < 3; j++)
                    if (j != i) Assert.DoesNotContain($"clone-{j}-{700 + j}", text); // and nobody else's
                Assert.DoesNotContain("FIRESHARP-INIT-OK", text); // continued, not rebooted
            }
            foreach (var c in clones) Type(c.Vm, "reboot -f\n");
            foreach (var c in clones)
            {
                Assert.True(c.Vm.Exited.Wait(CloneTimeout), "clone did not reboot");
                Assert.Equal(VmExitKind.Reset, c.Vm.Exited.Result.Kind);
            }
        }
        finally
        {
            foreach (var c in clones) await c.DisposeAsync();
        }
    }

    /// <summary>Bytes the file system allocated for <paramref name="path"/> (du).</summary>
    private static long AllocatedBytes(string path)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("du", ["-B1", path]) { RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return long.Parse(text.Split('\t')[0], System.Globalization.CultureInfo.InvariantCulture);
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
