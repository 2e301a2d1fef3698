using System.Diagnostics;
using FireSharp.Daemon;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Api;

/// <summary>
/// Records (vm.pb, function.json) are replaced atomically and durably: the temporary file is fsynced before it is
/// renamed over the record. Seen with strace on the one thread that writes.
/// </summary>
public sealed class AtomicFileTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void A_record_is_replaced_with_its_new_contents_and_no_temporary_file_is_left()
    {
        string path = Path.Combine(_dir, "vm.pb");
        AtomicFile.Replace(path, "old"u8);
        AtomicFile.Replace(path, "new contents"u8);
        Assert.Equal("new contents", File.ReadAllText(path));
        Assert.Equal(["vm.pb"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [SkippableFact]
    public void The_temporary_file_is_fsynced_before_it_is_renamed_over_the_record()
    {
        TestEnvironment.Require(File.Exists("/usr/bin/strace") || File.Exists("/bin/strace"), "strace is not installed");
        string path = Path.Combine(_dir, "vm.pb"), trace = Path.Combine(_dir, "trace.txt");
        var syscalls = TraceOneThread(trace, () => AtomicFile.Replace(path, "record"u8));
        int fsync = syscalls.FindIndex(l => (l.StartsWith("fsync(", StringComparison.Ordinal) || l.StartsWith("fdatasync(", StringComparison.Ordinal))
                                            && l.Contains("vm.pb.tmp>", StringComparison.Ordinal));
        int rename = syscalls.FindIndex(l => l.StartsWith("rename", StringComparison.Ordinal) && l.Contains("vm.pb\"", StringComparison.Ordinal));
        Assert.True(rename >= 0, "no rename onto vm.pb was traced:\n" + string.Join('\n', syscalls));
        Assert.True(fsync >= 0 && fsync < rename, "vm.pb.tmp was not fsynced before its rename:\n" + string.Join('\n', syscalls));
    }

    /// <summary>Runs <paramref name="work"/> on a thread of its own under strace (that thread only) and returns the traced lines.</summary>
    private static List<string> TraceOneThread(string output, Action work)
    {
        using var attached = new ManualResetEventSlim();
        int tid = 0;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            // /proc/thread-self is a link to PID/task/TID.
            tid = int.Parse(Path.GetFileName(new DirectoryInfo("/proc/thread-self").LinkTarget!), System.Globalization.CultureInfo.InvariantCulture);
            attached.Wait(Timeout);
            try { work(); }
            catch (Exception e) { failure = e; }
        }) { Name = "traced" };
        thread.Start();
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref tid) != 0, Timeout));
        var psi = new ProcessStartInfo("strace") { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])["-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o", output, "-p", tid.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            psi.ArgumentList.Add(a);
        using var strace = Process.Start(psi)!;
        try
        {
            // strace says "Process N attached" on stderr once it traces the thread.
            var first = strace.StandardError.ReadLineAsync();
            string line = first.Wait(Timeout) ? first.Result ?? "" : "";
            TestEnvironment.Require(line.Contains("attached", StringComparison.Ordinal), $"strace cannot trace this process ({line})");
        }
        finally
        {
            attached.Set();
        }
        Assert.True(thread.Join(Timeout), "the traced thread did not finish");
        // The thread has ended, so strace has no tracee left and exits.
        if (!strace.WaitForExit(Timeout)) strace.Kill();
        if (failure is not null) throw new InvalidOperationException("the traced work failed", failure);
        return [.. File.ReadAllLines(output).Select(l => l.Trim())];
    }
}
