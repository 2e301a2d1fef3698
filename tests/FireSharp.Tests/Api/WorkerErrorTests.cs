using FireSharp.Boot;
using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Devices.Virtio;
using FireSharp.Kvm;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.Worker;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using FireSharp.Worker;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// Errors and exit kinds cross the worker protocol typed: an error code and an API field decided from each VMM
/// exception's reason (never its message), and exit kinds as an enum.
/// </summary>
public sealed class WorkerErrorTests
{
    [Fact]
    public void A_host_limit_is_resource_exhausted_and_a_bad_size_invalid_whatever_the_message_says()
    {
        // The message mentions no host; the reason says the host is the limit.
        var host = WorkerFailures.ForCreate(new MachineConfigException(MachineConfigError.MemoryExceedsHost, "too much"));
        Assert.NotNull(host);
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, host.Code);
        Assert.Equal("spec.machine.mem_mib", host.Field);
        Assert.Equal("too much", host.Message);

        // The message talks of the host; the reason is a request out of range.
        var bad = WorkerFailures.ForCreate(new MachineConfigException(MachineConfigError.VcpuCountOutOfRange, "the host would not mind"));
        Assert.NotNull(bad);
        Assert.Equal(WorkerErrorCode.WorkerErrorInvalidArgument, bad.Code);
        Assert.Equal("spec.machine.vcpus", bad.Field);

        var vcpus = WorkerFailures.ForCreate(new MachineConfigException(MachineConfigError.VcpusExceedHost, "x"));
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, vcpus!.Code);
        Assert.Equal("spec.machine.vcpus", vcpus.Field);
    }

    [Fact]
    public void Kvm_out_of_memory_is_resource_exhausted_on_the_memory_field_and_other_errnos_unavailable()
    {
        var oom = WorkerFailures.ForCreate(new KvmException("KVM_SET_USER_MEMORY_REGION", Errno.ENOMEM));
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, oom!.Code);
        Assert.Equal("spec.machine.mem_mib", oom.Field);
        var restoreOom = WorkerFailures.ForRestore(new KvmException("mmap", Errno.ENOMEM));
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, restoreOom!.Code);
        Assert.Equal("dir", restoreOom.Field);
        var other = WorkerFailures.ForCreate(new KvmException("KVM_CREATE_VM", Errno.EINVAL));
        Assert.Equal(WorkerErrorCode.WorkerErrorUnavailable, other!.Code);
        Assert.Equal("", other.Field);
        Assert.Null(WorkerFailures.ForCreate(new InvalidOperationException("a bug")));
    }

    [Fact]
    public void A_refused_guest_memory_mapping_is_resource_exhausted_on_the_memory_field()
    {
        // GuestMemory used to throw OutOfMemoryException here, which the worker's request handler does not catch.
        var create = WorkerFailures.ForCreate(new FireSharp.Memory.GuestMemoryMapException(Errno.ENOMEM, "x bytes of guest memory"));
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, create!.Code);
        Assert.Equal("spec.machine.mem_mib", create.Field);
        var restore = WorkerFailures.ForRestore(new FireSharp.Memory.GuestMemoryMapException(Errno.ENOMEM, "x bytes of mem"));
        Assert.Equal(WorkerErrorCode.WorkerErrorResourceExhausted, restore!.Code);
        Assert.Equal("dir", restore.Field);
    }

    [Fact]
    public void Boot_and_device_errors_name_their_field_from_typed_data()
    {
        // The initrd is named by the exception's File, not by finding its path in the message.
        var initrd = WorkerFailures.ForCreate(new BootException(BootErrorReason.FileNotFound, "not there") { File = BootFile.Initrd });
        Assert.Equal("spec.kernel.initrd_path", initrd!.Field);
        Assert.Equal(WorkerErrorCode.WorkerErrorInvalidArgument, initrd.Code);
        var kernel = WorkerFailures.ForCreate(new BootException(BootErrorReason.FileNotFound, "not there") { File = BootFile.Kernel });
        Assert.Equal("spec.kernel.path", kernel!.Field);
        Assert.Equal("spec.kernel.cmdline", WorkerFailures.ForCreate(new BootException(BootErrorReason.CommandLineTooLong, "long"))!.Field);
        Assert.Equal("spec.kernel.initrd_path", WorkerFailures.ForCreate(new BootException(BootErrorReason.InitrdEmpty, "empty"))!.Field);

        // The message travels without the VMM's field prefix, taken from Detail rather than cut out of Message.
        var drive = WorkerFailures.ForCreate(new VirtioConfigException("drive[2]", VirtioConfigError.ImageNotFound, "image gone"));
        Assert.Equal("spec.drives[2].path", drive!.Field);
        Assert.Equal("image gone", drive.Message);
        var nic = WorkerFailures.ForCreate(new FireSharp.Devices.Virtio.Net.NetConfigException("net[1]", FireSharp.Devices.Virtio.Net.NetConfigError.TunUnavailable, "no tun"));
        Assert.Equal(WorkerErrorCode.WorkerErrorUnavailable, nic!.Code);
        Assert.Equal("spec.network_interfaces[1]", nic.Field);
        Assert.Equal("no tun", nic.Message);
    }

    [Fact]
    public void A_worker_error_reaches_the_api_with_its_kind_and_field()
    {
        var e = Assert.IsType<VmApiException>(WorkerClient.ToException(
            new WorkerError { Code = WorkerErrorCode.WorkerErrorResourceExhausted, Field = "spec.machine.mem_mib", Message = "too much" }));
        Assert.Equal(VmErrorKind.ResourceExhausted, e.Kind);
        Assert.Equal("spec.machine.mem_mib", e.Field);
        Assert.Equal("too much", e.Detail);
    }

    public static TheoryData<VmExitKind> ExitKinds() => new(Enum.GetValues<VmExitKind>());

    [Theory]
    [MemberData(nameof(ExitKinds))]
    public void Every_exit_kind_round_trips_as_an_enum_value(VmExitKind kind)
    {
        var wire = WorkerFailures.ToWire(kind);
        Assert.NotEqual(MachineExitKind.Unspecified, wire);
        // Through the bytes of a status, as the daemon reads it.
        var status = WorkerStatus.Parser.ParseFrom(new WorkerStatus { State = MachineState.Exited, ExitKind = wire }.ToByteArray());
        Assert.Equal(wire, status.ExitKind);
        // The daemon's kind has the VMM's name (Reset -> VmEndKind.Reset -> EXIT_KIND_RESET, ...).
        var end = WorkerSupervisor.ToEndKind(status.ExitKind);
        Assert.Equal(kind.ToString(), end.ToString());
        Assert.Equal(kind.ToString(), VmApiMapping.ToProto(new VmEnd(end, "", false, default)).Kind.ToString());
    }

    [Fact]
    public void Exit_kinds_are_distinct_on_the_wire()
    {
        var wire = Enum.GetValues<VmExitKind>().Select(WorkerFailures.ToWire).ToList();
        Assert.Equal(wire.Count, wire.Distinct().Count());
        Assert.Equal(VmEndKind.VmmError, WorkerSupervisor.ToEndKind(MachineExitKind.Unspecified));
    }
}

/// <summary>The same, through a worker's socket.</summary>
[Collection("kvm")]
public sealed class WorkerProtocolErrorTests : IAsyncLifetime
{
    private readonly string _dir = ApiTestServer.NewStateDir();
    private VmWorker _worker = null!;
    private WorkerClient _client = null!;

    public Task InitializeAsync()
    {
        string socket = Path.Combine(_dir, "w.sock");
        _worker = new VmWorker(socket, NullLogger.Instance);
        _worker.Start();
        _client = new WorkerClient(socket);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _client.DisposeAsync();
        await _worker.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private static CancellationToken Timeout() => new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token;

    [SkippableFact]
    public async Task More_memory_than_the_host_has_is_resource_exhausted_on_mem_mib()
    {
        KvmTestSupport.RequireKvm();
        ulong hostMib = HostLimits.Detect().MemoryBytes / (1024 * 1024);
        var create = new CreateMachine { Id = "big", KernelPath = TestPaths.Guest("hello"), MemMib = hostMib + 1024, Vcpus = 1 };
        var e = await Assert.ThrowsAsync<VmApiException>(() => _client.CallAsync(new WorkerRequest { Create = create }, Timeout()));
        Assert.Equal(VmErrorKind.ResourceExhausted, e.Kind);
        Assert.Equal("spec.machine.mem_mib", e.Field);
        Assert.DoesNotContain("mem:", e.Detail, StringComparison.Ordinal); // the VMM's own field prefix does not leak
    }

    [SkippableFact]
    public async Task A_missing_initrd_is_invalid_on_initrd_path()
    {
        KvmTestSupport.RequireKvm();
        var create = new CreateMachine { Id = "i", KernelPath = TestPaths.Guest("hello"), InitrdPath = Path.Combine(_dir, "no-initrd"), MemMib = 16, Vcpus = 1 };
        var e = await Assert.ThrowsAsync<VmApiException>(() => _client.CallAsync(new WorkerRequest { Create = create }, Timeout()));
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("spec.kernel.initrd_path", e.Field);
    }

    [SkippableFact]
    public async Task The_exit_kind_of_an_ended_guest_crosses_as_an_enum()
    {
        KvmTestSupport.RequireKvm();
        using var ct = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var events = _client.SubscribeAsync(ct.Token).GetAsyncEnumerator(ct.Token);
        var create = new CreateMachine { Id = "tf", KernelPath = TestPaths.Guest("triple-fault"), MemMib = 16, Vcpus = 1 };
        await _client.CallAsync(new WorkerRequest { Create = create }, ct.Token);
        await _client.CallAsync(new WorkerRequest { Start = new Proto.Worker.Empty() }, ct.Token);
        WorkerStatus? exited = null;
        while (exited is null && await events.MoveNextAsync())
            if (events.Current.Status.State == MachineState.Exited) exited = events.Current.Status;
        await events.DisposeAsync();
        Assert.NotNull(exited);
        Assert.Equal(MachineExitKind.TripleFault, exited.ExitKind);
        Assert.False(exited.ExitClean);
    }
}
