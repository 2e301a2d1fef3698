using System.Text;
using FireSharp.Daemon;
using FireSharp.Daemon.Functions;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Google.Protobuf;
using Grpc.Core;

namespace FireSharp.Tests.Functions;

/// <summary>
/// FunctionService over a fake VM factory: every malformed request gets its typed status naming the field, and the
/// registry, invoke paths, throttling and persistence behave like Lambda's.
/// </summary>
public sealed class FunctionApiTests : IAsyncLifetime
{
    private FunctionTestServer _server = null!;

    public async Task InitializeAsync() => _server = await FunctionTestServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private FunctionService.FunctionServiceClient Client => _server.Client;

    private static CreateFunctionRequest Create(FunctionSpec spec) => new() { Spec = spec };

    private Task<Function> CreateAsync(string name = "echo", Action<FunctionSpec>? change = null)
    {
        var spec = _server.Spec(name);
        change?.Invoke(spec);
        return Client.CreateFunctionAsync(Create(spec)).ResponseAsync;
    }

    private Task<InvokeResponse> InvokeAsync(string name, string payload, InvocationType type = InvocationType.RequestResponse) =>
        Client.InvokeAsync(new InvokeRequest { Name = name, Payload = ByteString.CopyFromUtf8(payload), InvocationType = type }).ResponseAsync;

    public static TheoryData<string> BadCreateCases() => new(BadCreates.Keys);

    /// <summary>name -> (change to a valid spec, status, field). Paths refer to the server's stand-in files by token.</summary>
    private static readonly Dictionary<string, (Action<FunctionSpec, FunctionTestServer> Change, StatusCode Code, string Field)> BadCreates = new()
    {
        ["empty name"] = ((s, _) => s.Name = "", StatusCode.InvalidArgument, "spec.name"),
        ["name of 65 characters"] = ((s, _) => s.Name = new string('a', 65), StatusCode.InvalidArgument, "spec.name"),
        ["name with a dot"] = ((s, _) => s.Name = "my.fn", StatusCode.InvalidArgument, "spec.name"),
        ["name with a space"] = ((s, _) => s.Name = "my fn", StatusCode.InvalidArgument, "spec.name"),
        ["name with unicode"] = ((s, _) => s.Name = "fné", StatusCode.InvalidArgument, "spec.name"),
        ["name with a slash"] = ((s, _) => s.Name = "a/b", StatusCode.InvalidArgument, "spec.name"),
        ["memory 127 MiB"] = ((s, _) => s.MemoryMib = 127, StatusCode.InvalidArgument, "spec.memory_mib"),
        ["memory 10241 MiB"] = ((s, _) => s.MemoryMib = 10241, StatusCode.InvalidArgument, "spec.memory_mib"),
        ["negative memory"] = ((s, _) => s.MemoryMib = -128, StatusCode.InvalidArgument, "spec.memory_mib"),
        ["timeout 901 s"] = ((s, _) => s.TimeoutSeconds = 901, StatusCode.InvalidArgument, "spec.timeout_seconds"),
        ["negative timeout"] = ((s, _) => s.TimeoutSeconds = -1, StatusCode.InvalidArgument, "spec.timeout_seconds"),
        ["negative vcpus"] = ((s, _) => s.Vcpus = -1, StatusCode.InvalidArgument, "spec.vcpus"),
        ["more vcpus than the host"] = ((s, _) => s.Vcpus = 100_000, StatusCode.ResourceExhausted, "spec.vcpus"),
        ["missing code"] = ((s, _) => s.Code = null, StatusCode.InvalidArgument, "spec.code"),
        ["empty code source"] = ((s, _) => s.Code = new FunctionCode(), StatusCode.InvalidArgument, "spec.code"),
        ["code image does not exist"] = ((s, _) => s.Code.ImagePath = "/nonexistent/code.ext4", StatusCode.InvalidArgument, "spec.code.image_path"),
        ["relative code image"] = ((s, _) => s.Code.ImagePath = "code.ext4", StatusCode.InvalidArgument, "spec.code.image_path"),
        ["code image is a directory"] = ((s, _) => s.Code.ImagePath = "/tmp", StatusCode.InvalidArgument, "spec.code.image_path"),
        ["code directory does not exist"] = ((s, _) => s.Code = new FunctionCode { Directory = "/nonexistent/task" }, StatusCode.InvalidArgument, "spec.code.directory"),
        ["relative code directory"] = ((s, _) => s.Code = new FunctionCode { Directory = "task" }, StatusCode.InvalidArgument, "spec.code.directory"),
        ["missing handler"] = ((s, _) => s.Handler = "", StatusCode.InvalidArgument, "spec.handler"),
        ["handler with a space"] = ((s, _) => s.Handler = "my handler", StatusCode.InvalidArgument, "spec.handler"),
        ["handler of 129 characters"] = ((s, _) => s.Handler = new string('h', 129), StatusCode.InvalidArgument, "spec.handler"),
        ["six layers"] = ((s, srv) => s.Layers.AddRange(Enumerable.Range(0, 6).Select(srv.Layer)), StatusCode.InvalidArgument, "spec.layers"),
        ["missing layer file"] = ((s, _) => s.Layers.Add("/nonexistent/layer.ext4"), StatusCode.InvalidArgument, "spec.layers[0]"),
        ["relative second layer"] = ((s, srv) => s.Layers.AddRange([srv.Layer(0), "layer.ext4"]), StatusCode.InvalidArgument, "spec.layers[1]"),
        ["missing kernel file"] = ((s, _) => s.Image.KernelPath = "/nonexistent/vmlinux", StatusCode.InvalidArgument, "spec.image.kernel_path"),
        ["relative rootfs"] = ((s, _) => s.Image.RootfsPath = "rootfs.ext4", StatusCode.InvalidArgument, "spec.image.rootfs_path"),
        ["no image and no daemon default"] = ((s, _) => s.Image = null, StatusCode.InvalidArgument, "spec.image.kernel_path"),
        ["no rootfs and no daemon default"] = ((s, _) => s.Image.RootfsPath = "", StatusCode.InvalidArgument, "spec.image.rootfs_path"),
        ["environment key starting with a digit"] = ((s, _) => s.Environment["1A"] = "x", StatusCode.InvalidArgument, "spec.environment[\"1A\"]"),
        ["environment key with a dash"] = ((s, _) => s.Environment["A-B"] = "x", StatusCode.InvalidArgument, "spec.environment[\"A-B\"]"),
        ["environment over 4 KiB"] = ((s, _) => s.Environment["BIG"] = new string('x', 4097), StatusCode.InvalidArgument, "spec.environment"),
    };

    [Theory]
    [MemberData(nameof(BadCreateCases))]
    public async Task A_malformed_create_is_refused_naming_the_field(string name)
    {
        var (change, code, field) = BadCreates[name];
        var spec = _server.Spec();
        change(spec, _server);
        await RpcAssert.FailsAsync(code, () => Client.CreateFunctionAsync(Create(spec)).ResponseAsync, field);
        // Nothing was registered.
        Assert.Empty((await Client.ListFunctionsAsync(new ListFunctionsRequest())).Functions);
    }

    [Fact]
    public async Task A_create_without_a_spec_is_refused() =>
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => Client.CreateFunctionAsync(new CreateFunctionRequest()).ResponseAsync, "spec");

    [Fact]
    public async Task Create_fills_in_Lambda_defaults_and_derives_vcpus_from_memory()
    {
        var small = await CreateAsync("small");
        Assert.Equal(128, small.Spec.MemoryMib);
        Assert.Equal(3, small.Spec.TimeoutSeconds);
        Assert.Equal(1, small.Spec.Vcpus);
        Assert.Equal("1", small.Version);
        Assert.Equal(FunctionState.Active, small.State);
        Assert.EndsWith(":function:small", small.Arn, StringComparison.Ordinal);

        var big = await CreateAsync("big", s => s.MemoryMib = 10240);
        int hostMax = Math.Min(64, Math.Max(1, Environment.ProcessorCount));
        Assert.Equal(Math.Min(6, hostMax), big.Spec.Vcpus); // Lambda: 1 vCPU per 1769 MB, 6 at 10240 MB
    }

    [Fact]
    public async Task A_taken_name_is_AlreadyExists()
    {
        await CreateAsync();
        await RpcAssert.FailsAsync(StatusCode.AlreadyExists, () => CreateAsync(), "spec.name");
    }

    [Fact]
    public async Task Unknown_functions_are_NotFound_and_bad_names_InvalidArgument()
    {
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => Client.GetFunctionAsync(new GetFunctionRequest { Name = "nope" }).ResponseAsync, "name");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => InvokeAsync("nope", "{}"), "name");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => Client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = "nope" }).ResponseAsync, "name");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => Client.UpdateFunctionConfigurationAsync(new UpdateFunctionConfigurationRequest { Name = "nope", MemoryMib = 256 }).ResponseAsync, "name");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "nope", ReservedConcurrentExecutions = 1 }).ResponseAsync, "name");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => InvokeAsync("bad name", "{}"), "name");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => InvokeAsync("", "{}"), "name");
    }

    [Fact]
    public async Task Invoke_echoes_cold_then_warm_with_Lambda_figures()
    {
        await CreateAsync(change: s => s.MemoryMib = 512);
        var cold = await InvokeAsync("echo", """{"hello":"world"}""");
        Assert.Equal(200, cold.StatusCode);
        Assert.Equal("""{"hello":"world"}""", cold.Payload.ToStringUtf8());
        Assert.Equal(StartKind.BootCold, cold.StartKind);
        Assert.True(cold.InitDurationMs > 0);
        Assert.Equal("", cold.FunctionError);
        Assert.Equal(2, cold.BilledDurationMs); // 1.5 ms rounds up
        Assert.Equal(20, cold.MaxMemoryUsedMib);
        Assert.Equal(0.5 * 2 / 1000, cold.GbSeconds, 9);
        Assert.True(Guid.TryParse(cold.RequestId, out _));
        Assert.Contains("echoed", cold.LogTail, StringComparison.Ordinal);

        var warm = await InvokeAsync("echo", "again");
        Assert.Equal(StartKind.Warm, warm.StartKind);
        Assert.Equal(0, warm.InitDurationMs);
        Assert.Equal("again", warm.Payload.ToStringUtf8());
        Assert.Equal(1, _server.Factory.Created);

        var stats = (await Client.GetFunctionAsync(new GetFunctionRequest { Name = "echo" })).Stats;
        Assert.Equal(2, stats.Invocations);
        Assert.Equal(1, stats.WarmStarts);
        Assert.Equal(1, stats.BootColdStarts);
        Assert.Equal(1, stats.IdleVms);
    }

    [Fact]
    public async Task A_handler_error_is_a_function_error_not_a_call_error()
    {
        await CreateAsync();
        var r = await InvokeAsync("echo", "fail please");
        Assert.Equal(200, r.StatusCode);
        Assert.Equal("Handled", r.FunctionError);
        Assert.Equal("HandlerError", r.ErrorType);
        Assert.Contains("asked to fail", r.Payload.ToStringUtf8(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_payload_over_6_MB_is_ResourceExhausted_like_RequestTooLargeException()
    {
        await CreateAsync();
        var big = new string('x', FunctionValidator.MaxPayloadBytes + 1);
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => InvokeAsync("echo", big), "payload");
        // Exactly 6 MB goes through.
        var ok = await InvokeAsync("echo", new string('y', FunctionValidator.MaxPayloadBytes - 16));
        Assert.Equal(FunctionValidator.MaxPayloadBytes - 16, ok.Payload.Length);
        // Event payloads are limited to 256 KB.
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => InvokeAsync("echo", new string('z', 256 * 1024 + 1), InvocationType.Event), "payload");
    }

    [Fact]
    public async Task An_unknown_invocation_type_is_InvalidArgument()
    {
        await CreateAsync();
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => InvokeAsync("echo", "{}", (InvocationType)42), "invocation_type");
    }

    [Fact]
    public async Task A_throttled_invoke_is_ResourceExhausted_with_retry_after()
    {
        await CreateAsync();
        await Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 0 });
        var e = await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => InvokeAsync("echo", "{}"));
        Assert.True(int.TryParse(e.Trailers.GetValue(FunctionErrors.RetryAfterTrailer), out int seconds) && seconds >= 1,
            $"retry-after trailer: '{e.Trailers.GetValue(FunctionErrors.RetryAfterTrailer)}'");
        Assert.Equal("ReservedConcurrency", e.Trailers.GetValue(FunctionErrors.ThrottleReasonTrailer));
        Assert.Contains("TooManyRequests", e.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(0, _server.Factory.Created);
        Assert.Equal(1, (await Client.GetFunctionAsync(new GetFunctionRequest { Name = "echo" })).Stats.Throttles);
    }

    [Fact]
    public async Task A_busy_reservation_throttles_the_next_invoke()
    {
        await CreateAsync();
        await Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 1 });
        _server.Factory.Hold();
        var first = InvokeAsync("echo", "one");
        while (Volatile.Read(ref _server.Factory.Entered) == 0) await Task.Delay(10);
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => InvokeAsync("echo", "two"));
        _server.Factory.ReleaseAll();
        Assert.Equal("one", (await first).Payload.ToStringUtf8());
    }

    [Fact]
    public async Task Event_answers_202_at_once_and_DryRun_204_without_a_VM()
    {
        await CreateAsync();
        var dry = await InvokeAsync("echo", "{}", InvocationType.DryRun);
        Assert.Equal(204, dry.StatusCode);
        Assert.Equal(0, _server.Factory.Created);

        _server.Factory.Hold(); // the queued invocation cannot finish: Event must not wait for it
        var ev = await InvokeAsync("echo", "{}", InvocationType.Event);
        Assert.Equal(202, ev.StatusCode);
        Assert.NotEmpty(ev.RequestId);
        Assert.Empty(ev.Payload.ToByteArray());
        _server.Factory.ReleaseAll();
    }

    [Fact]
    public async Task Invoking_a_function_being_deleted_is_FailedPrecondition()
    {
        await CreateAsync();
        _server.Factory.Hold();
        var running = InvokeAsync("echo", "in flight");
        while (Volatile.Read(ref _server.Factory.Entered) == 0) await Task.Delay(10);
        var deleting = Client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = "echo" }).ResponseAsync;
        // The delete waits for the running invocation; meanwhile the function is DELETING.
        Function f;
        do f = await Client.GetFunctionAsync(new GetFunctionRequest { Name = "echo" });
        while (f.State != FunctionState.Deleting);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => InvokeAsync("echo", "late"));
        _server.Factory.ReleaseAll();
        Assert.Equal("in flight", (await running).Payload.ToStringUtf8());
        Assert.Equal("echo", (await deleting).Name);
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => InvokeAsync("echo", "after"), "name");
        Assert.False(Directory.Exists(Path.Combine(_server.Options.FunctionsDir, "echo")));
    }

    [Fact]
    public async Task Concurrency_settings_are_checked_against_the_account()
    {
        await CreateAsync();
        var account = await Client.GetAccountSettingsAsync(new GetAccountSettingsRequest());
        Assert.Equal(150, account.ConcurrentExecutionsLimit);
        Assert.Equal(1, account.FunctionCount);
        // 150 minus the 100 that must stay unreserved: at most 50.
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 51 }).ResponseAsync,
            "reserved_concurrent_executions");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = -1 }).ResponseAsync,
            "reserved_concurrent_executions");
        var f = await Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 50 });
        Assert.True(f.HasReservedConcurrency);
        Assert.Equal(50, f.ReservedConcurrency);
        Assert.Equal(100, (await Client.GetAccountSettingsAsync(new GetAccountSettingsRequest())).UnreservedConcurrentExecutions);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.PutProvisionedConcurrencyAsync(new PutProvisionedConcurrencyRequest { Name = "echo", ProvisionedConcurrentExecutions = 51 }).ResponseAsync,
            "provisioned_concurrent_executions");
        f = await Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", Remove = true });
        Assert.False(f.HasReservedConcurrency);
    }

    [Fact]
    public async Task Updates_make_new_versions_and_validate_fields()
    {
        await CreateAsync();
        await InvokeAsync("echo", "v1");
        var f = await Client.UpdateFunctionConfigurationAsync(new UpdateFunctionConfigurationRequest { Name = "echo", MemoryMib = 1024, Environment = { ["A"] = "1" } });
        Assert.Equal("2", f.Version);
        Assert.Equal(1024, f.Spec.MemoryMib);
        Assert.Equal("1", f.Spec.Environment["A"]);
        var r = await InvokeAsync("echo", "v2");
        Assert.Equal("2", r.Version);
        Assert.Equal(StartKind.BootCold, r.StartKind); // the old version's idle VM was retired

        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.UpdateFunctionConfigurationAsync(new UpdateFunctionConfigurationRequest { Name = "echo", MemoryMib = 64 }).ResponseAsync, "memory_mib");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.UpdateFunctionConfigurationAsync(new UpdateFunctionConfigurationRequest { Name = "echo", TimeoutSeconds = 1000 }).ResponseAsync, "timeout_seconds");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.UpdateFunctionCodeAsync(new UpdateFunctionCodeRequest { Name = "echo" }).ResponseAsync, "code");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.UpdateFunctionCodeAsync(new UpdateFunctionCodeRequest { Name = "echo", Code = new FunctionCode { ImagePath = _server.Code }, ReplaceLayers = true, Layers = { Enumerable.Range(0, 6).Select(_server.Layer) } }).ResponseAsync, "layers");
        f = await Client.UpdateFunctionCodeAsync(new UpdateFunctionCodeRequest { Name = "echo", Code = new FunctionCode { ImagePath = _server.Layer(6) } });
        Assert.Equal("3", f.Version);
        Assert.Equal(_server.Layer(6), f.Spec.Code.ImagePath);
    }

    [SkippableFact]
    public async Task A_code_directory_is_packed_into_an_ext4_image_in_the_state_dir()
    {
        TestEnvironment.Require(File.Exists("/usr/sbin/mke2fs") || File.Exists("/sbin/mke2fs") || File.Exists("/usr/bin/mke2fs"), "mke2fs (e2fsprogs) is not installed");
        string task = Path.Combine(_server.Dir, "task");
        Directory.CreateDirectory(task);
        await File.WriteAllTextAsync(Path.Combine(task, "bootstrap"), "#!/bin/sh\necho hi\n");
        var f = await CreateAsync(change: s => s.Code = new FunctionCode { Directory = task });
        Assert.Equal(task, f.CodeSourceDirectory);
        string image = f.Spec.Code.ImagePath;
        Assert.StartsWith(_server.Options.FunctionsDir, image, StringComparison.Ordinal);
        // An ext4 superblock: magic 0xEF53 at offset 1024 + 56.
        var bytes = await File.ReadAllBytesAsync(image);
        Assert.Equal(0xEF53, BitConverter.ToUInt16(bytes, 1024 + 56));
    }

    [SkippableFact]
    public async Task A_code_directory_is_packed_through_fds_refusing_links_out_fifos_and_sockets_but_keeping_links_inside()
    {
        TestEnvironment.Require(File.Exists("/usr/sbin/mke2fs") || File.Exists("/sbin/mke2fs") || File.Exists("/usr/bin/mke2fs"), "mke2fs (e2fsprogs) is not installed");
        string task = Path.Combine(_server.Dir, "task-links");
        Directory.CreateDirectory(Path.Combine(task, "lib"));
        await File.WriteAllTextAsync(Path.Combine(task, "lib", "real.txt"), "inside\n");
        await File.WriteAllTextAsync(Path.Combine(task, "bootstrap"), "#!/bin/sh\n");
        // Each of these, one at a time, makes the directory refused, naming the field and the entry.
        var bad = new (string Entry, Action Make, string Says)[]
        {
            ("lib/shadow", () => File.CreateSymbolicLink(Path.Combine(task, "lib", "shadow"), "/etc/shadow"), "leads out of the code directory"),
            ("up", () => File.CreateSymbolicLink(Path.Combine(task, "up"), "../../.."), "leads out of the code directory"),
            ("etc", () => Directory.CreateSymbolicLink(Path.Combine(task, "etc"), "/etc"), "leads out of the code directory"),
            ("lib/fifo", () => FireSharp.Tests.Kvm.PathPolicyTests.MakeFifo(Path.Combine(task, "lib", "fifo")), "is a FIFO"),
        };
        foreach (var (entry, make, says) in bad)
        {
            make();
            var e = await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => CreateAsync(change: s => s.Code = new FunctionCode { Directory = task }), "spec.code.directory");
            Assert.Contains(entry, e.Status.Detail, StringComparison.Ordinal);
            Assert.Contains(says, e.Status.Detail, StringComparison.Ordinal);
            File.Delete(Path.Combine(task, entry));
        }
        // Nothing is left behind by the refusals: no image, no staging copy.
        Assert.Empty(Directory.Exists(_server.Options.FunctionsDir) ? Directory.GetFileSystemEntries(_server.Options.FunctionsDir, "*code-*", SearchOption.AllDirectories) : []);

        // A relative link that stays inside is packed as a link (the guest resolves it; the host never follows one).
        File.CreateSymbolicLink(Path.Combine(task, "handler.txt"), "lib/real.txt");
        var f = await CreateAsync(change: s => s.Code = new FunctionCode { Directory = task });
        string listing = Debugfs(f.Spec.Code.ImagePath, "stat /handler.txt");
        Assert.Contains("Type: symlink", listing, StringComparison.Ordinal);
        Assert.Contains("lib/real.txt", listing, StringComparison.Ordinal);
        Assert.Contains("Type: regular", Debugfs(f.Spec.Code.ImagePath, "stat /lib/real.txt"), StringComparison.Ordinal);
        // And through UpdateFunctionCode too, under its own field name.
        File.CreateSymbolicLink(Path.Combine(task, "passwd"), "/etc/passwd");
        var u = await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => Client.UpdateFunctionCodeAsync(new UpdateFunctionCodeRequest { Name = "echo", Code = new FunctionCode { Directory = task } }).ResponseAsync, "code.directory");
        Assert.Contains("passwd", u.Status.Detail, StringComparison.Ordinal);
    }

    /// <summary>debugfs -R (e2fsprogs) on an image: what the guest would see.</summary>
    private static string Debugfs(string image, string request)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("debugfs", ["-R", request, image]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(30_000), "debugfs did not finish");
        return output;
    }

    [Fact]
    public async Task Functions_and_their_concurrency_survive_a_daemon_restart()
    {
        await CreateAsync(change: s => { s.MemoryMib = 256; s.Environment["K"] = "v"; });
        await Client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = "echo", ReservedConcurrentExecutions = 7 });
        await _server.RestartAsync();
        var f = await _server.Client.GetFunctionAsync(new GetFunctionRequest { Name = "echo" });
        Assert.Equal(256, f.Spec.MemoryMib);
        Assert.Equal("v", f.Spec.Environment["K"]);
        Assert.Equal(7, f.ReservedConcurrency);
        Assert.Equal("echo", (await _server.Client.InvokeAsync(new InvokeRequest { Name = "echo", Payload = ByteString.CopyFromUtf8("echo") })).Payload.ToStringUtf8());
    }
}
