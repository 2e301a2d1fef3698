using System.Security.Cryptography;
using FireSharp.Cli;
using FireSharp.Proto.V1;
using FireSharp.Tests.Agent;
using FireSharp.Tests.Cli;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// CopyIn/CopyOut and <c>firesharp vm cp</c> without a Linux guest: as in <see cref="AgentExecApiTests"/>, a tiny
/// guest with spec.agent whose vsock socket is a fake spliced to a real agent on the host (so "guest" paths are host
/// paths in the agent's directory). Files above the agent's old 1 MiB cap go both ways with their content and mode.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CopyApiTests(ITestOutputHelper output)
{
    /// <summary>A running VM "cp" whose agent (on the host) is ready.</summary>
    private static async Task<FakeHybridVsock> ReadyVmAsync(ApiTestServer s, AgentUnderTest agent)
    {
        var spec = ApiTestServer.Spec("counter");
        spec.Agent = true;
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "cp", Spec = spec, Start = true });
        string uds = Path.Combine(s.Options.RunDir("cp"), "v.sock");
        File.Delete(uds);
        var vsock = new FakeHybridVsock(agent.SocketPath, uds);
        await AgentExecApiTests.SendReadyAsync(uds + "_53");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!(await s.Client.GetVmAsync(new GetVmRequest { Id = "cp" }, cancellationToken: cts.Token)).AgentReady) await Task.Delay(20, cts.Token);
        return vsock;
    }

    [SkippableFact]
    public async Task Vm_cp_copies_large_files_in_and_out_with_their_mode()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await using var agent = await AgentUnderTest.StartAsync();
        using var vsock = await ReadyVmAsync(s, agent);
        string local = Path.Combine(agent.Directory, "local");
        Directory.CreateDirectory(local);
        var data = RandomNumberGenerator.GetBytes((5 << 20) / 2 + 777); // 2.5 MiB and a bit: three agent chunks
        string src = Path.Combine(local, "big.bin");
        await File.WriteAllBytesAsync(src, data);
        File.SetUnixFileMode(src, (UnixFileMode)0b111_101_000); // 0750

        // In, into a new directory (-p) under the source's name (a destination ending in '/').
        string guestDir = Path.Combine(agent.Directory, "guest", "sub");
        var (code, err) = s.RunCli("vm", "cp", "-p", src, $"cp:{guestDir}/");
        Assert.True(code == 0, $"exit {code}: {err}");
        string guestFile = Path.Combine(guestDir, "big.bin");
        Assert.Equal(data, await File.ReadAllBytesAsync(guestFile));
        Assert.Equal((UnixFileMode)0b111_101_000, File.GetUnixFileMode(guestFile));

        // Out, into a local directory.
        string outDir = Path.Combine(local, "out");
        Directory.CreateDirectory(outDir);
        File.SetUnixFileMode(guestFile, (UnixFileMode)0b110_000_000); // 0600
        (code, err) = s.RunCli("vm", "cp", $"cp:{guestFile}", outDir);
        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.Equal(data, await File.ReadAllBytesAsync(Path.Combine(outDir, "big.bin")));
        Assert.Equal((UnixFileMode)0b110_000_000, File.GetUnixFileMode(Path.Combine(outDir, "big.bin")));
        Assert.Single(Directory.GetFiles(outDir)); // no temporary file left beside it

        // A guest's setuid/setgid bits never reach the host: only the permission bits are kept.
        File.SetUnixFileMode(guestFile, (UnixFileMode)0b110_111_101_101); // 06755
        string suid = Path.Combine(outDir, "suid");
        (code, err) = s.RunCli("vm", "cp", $"cp:{guestFile}", suid);
        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.Equal((UnixFileMode)0b111_101_101, File.GetUnixFileMode(suid)); // 0755

        // --mode, and an empty file.
        string empty = Path.Combine(local, "empty");
        await File.WriteAllBytesAsync(empty, []);
        (code, err) = s.RunCli("vm", "cp", "--mode", "0640", empty, $"cp:{guestDir}/e");
        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.Empty(await File.ReadAllBytesAsync(Path.Combine(guestDir, "e")));
        Assert.Equal((UnixFileMode)0b110_100_000, File.GetUnixFileMode(Path.Combine(guestDir, "e")));
    }

    [SkippableFact]
    public async Task Missing_files_and_bad_paths_are_clear()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await using var agent = await AgentUnderTest.StartAsync();
        using var vsock = await ReadyVmAsync(s, agent);
        string missing = Path.Combine(agent.Directory, "no-such-file");

        // The API: NOT_FOUND / INVALID_ARGUMENT naming `path`.
        var e = await RpcAssert.FailsAsync(StatusCode.NotFound, async () =>
        {
            using var call = s.Client.CopyOut(new CopyOutRequest { Id = "cp", Path = missing });
            while (await call.ResponseStream.MoveNext()) { }
        }, "path");
        Assert.Contains("no such file", e.Status.Detail);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, async () =>
        {
            using var call = s.Client.CopyOut(new CopyOutRequest { Id = "cp", Path = "relative" });
            while (await call.ResponseStream.MoveNext()) { }
        }, "path");
        await RpcAssert.FailsAsync(StatusCode.NotFound, async () =>
        {
            using var call = s.Client.CopyIn();
            await call.RequestStream.WriteAsync(new CopyInRequest { Id = "cp", Path = Path.Combine(missing, "x"), Data = Google.Protobuf.ByteString.CopyFromUtf8("x") });
            await call.RequestStream.CompleteAsync();
            await call.ResponseAsync;
        }, "path");

        // The command line: one line each, and nothing left behind locally.
        string dst = Path.Combine(agent.Directory, "copied");
        var (code, err) = s.RunCli("vm", "cp", $"cp:{missing}", dst);
        Assert.NotEqual(0, code);
        Assert.Contains("no such file", err);
        Assert.False(File.Exists(dst));
        Assert.Empty(Directory.GetFiles(agent.Directory, ".copied.fscp-*"));
        (code, err) = s.RunCli("vm", "cp", missing, "cp:/tmp/x");
        Assert.Equal(CopyCommand.ExitNotFound, code);
        Assert.Contains($"{missing}: no such file", err);
        (code, err) = s.RunCli("vm", "cp", missing, dst);
        Assert.Equal(2, code);
        Assert.Contains("one side must be VMID:/path", err);
        (code, err) = s.RunCli("vm", "cp", "cp:relative", dst);
        Assert.Equal(2, code);
        Assert.Contains("must be absolute", err);
    }

    [Fact]
    public void Guest_and_local_sides_are_told_apart()
    {
        Assert.Equal(new CopyCommand.Endpoint("vm-1", "/etc/hosts"), CopyCommand.Endpoint.Parse("vm-1:/etc/hosts"));
        Assert.Equal(new CopyCommand.Endpoint(null, "./a:b"), CopyCommand.Endpoint.Parse("./a:b"));
        Assert.Equal(new CopyCommand.Endpoint(null, "/x:/y"), CopyCommand.Endpoint.Parse("/x:/y"));
        Assert.Equal(new CopyCommand.Endpoint(null, "file"), CopyCommand.Endpoint.Parse("file"));
        Assert.Equal(0b111_101_101u, CopyCommand.ParseMode("755"));
        Assert.Throws<ArgumentException>(() => CopyCommand.ParseMode("999"));
        Assert.Throws<ArgumentException>(() => CopyCommand.ParseMode("17777"));
    }
}
