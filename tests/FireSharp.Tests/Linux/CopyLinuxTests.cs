using System.Diagnostics;
using System.Security.Cryptography;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using Xunit.Abstractions;

namespace FireSharp.Tests.Linux;

/// <summary>
/// <c>firesharp snapshot restore --wait=agent</c> and <c>firesharp vm cp</c> with the Linux guest (a clone of the
/// boot-once fixture, in-process daemon and workers): files larger than the agent's 1 MiB request limit go in and
/// out, their content checked on both sides (sha256sum in the guest) and the mode kept on the way in.
/// </summary>
[Collection("kvm")]
[Trait("Category", "Slow")]
// About 10 minutes on a loaded PVM host: a megabyte through vsock takes over a minute there (the guest kernel is emulated).
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CopyLinuxTests(ITestOutputHelper output)
{
    private static async Task<string> ExecAsync(ApiTestServer s, string id, string script)
    {
        var reply = await s.Client.ExecAsync(new ExecRequest { Id = id, Argv = { "sh", "-c", script } }, deadline: DateTime.UtcNow.AddMinutes(10));
        Assert.True(reply.ExitCode == 0, $"{script}: exit {reply.ExitCode}: {reply.Stderr.ToStringUtf8()}");
        return reply.Stdout.ToStringUtf8().Trim();
    }

    private static string Sha256(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    [SkippableFact]
    public async Task Vm_cp_copies_files_over_1_MiB_into_and_out_of_a_linux_guest()
    {
        var fixture = LinuxGuestFixture.Get(output.WriteLine);
        await using var s = await ApiTestServer.StartAsync(output, stateDir: fixture.NewDaemonStateDir());
        string local = Path.Combine(s.Options.StateDir, "local");
        Directory.CreateDirectory(local);
        try
        {
            var sw = Stopwatch.StartNew();
            var (code, err) = s.RunCli("snapshot", "restore", fixture.SnapshotDir, "--id", "cpl", "--wait=agent");
            output.WriteLine(err);
            Assert.True(code == 0, $"snapshot restore --wait=agent: exit {code}: {err}");
            Assert.True((await s.Client.GetVmAsync(new GetVmRequest { Id = "cpl" })).AgentReady);
            output.WriteLine($"restore --wait=agent: {sw.ElapsedMilliseconds} ms (PVM host, loaded)");

            // In: 1 MiB and a bit (two agent chunks; vsock through PVM's emulated guest kernel moves ~15 KB/s here), mode 0750.
            var data = RandomNumberGenerator.GetBytes((1 << 20) + 4321);
            string src = Path.Combine(local, "in.bin");
            await File.WriteAllBytesAsync(src, data);
            File.SetUnixFileMode(src, (UnixFileMode)0b111_101_000);
            sw.Restart();
            (code, err) = s.RunCli("vm", "cp", src, "cpl:/tmp/in.bin");
            Assert.True(code == 0, $"vm cp in: exit {code}: {err}");
            output.WriteLine($"vm cp in, {data.Length} bytes: {sw.ElapsedMilliseconds} ms (PVM host, loaded)");
            Assert.Equal($"{Sha256(data)} {data.Length} 750", await ExecAsync(s, "cpl",
                "echo $(sha256sum /tmp/in.bin | cut -d' ' -f1) $(stat -c '%s %a' /tmp/in.bin)"));

            // Out: a file the guest made (1 MiB and a bit), checked against the guest's own hash.
            string guestHash = await ExecAsync(s, "cpl", "head -c 1052931 /dev/urandom > /tmp/out.bin && chmod 640 /tmp/out.bin && sha256sum /tmp/out.bin | cut -d' ' -f1");
            sw.Restart();
            (code, err) = s.RunCli("vm", "cp", "cpl:/tmp/out.bin", local);
            Assert.True(code == 0, $"vm cp out: exit {code}: {err}");
            output.WriteLine($"vm cp out, 1052931 bytes: {sw.ElapsedMilliseconds} ms (PVM host, loaded)");
            var copied = await File.ReadAllBytesAsync(Path.Combine(local, "out.bin"));
            Assert.Equal(1052931, copied.Length);
            Assert.Equal(guestHash, Sha256(copied));
            Assert.Equal((UnixFileMode)0b110_100_000, File.GetUnixFileMode(Path.Combine(local, "out.bin")));

            // A missing guest file: one line, non-zero.
            (code, err) = s.RunCli("vm", "cp", "cpl:/tmp/nope", local);
            Assert.NotEqual(0, code);
            Assert.Contains("no such file", err);
        }
        finally
        {
            try { await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "cpl", Force = true }); }
            catch (Grpc.Core.RpcException) { }
        }
    }
}
