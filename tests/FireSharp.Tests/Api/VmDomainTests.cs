using System.Reflection;
using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// VmManager's API is the daemon's domain model, not the wire (firesharp.v1 maps to it in the gRPC layer only),
/// and the VM records on disk keep their state.proto format.
/// </summary>
public sealed class VmDomainTests
{
    [Fact]
    public void The_vm_managers_api_takes_and_returns_no_wire_types()
    {
        var wire = new List<string>();
        foreach (var m in typeof(VmManager).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
        {
            var types = m.GetParameters().Select(p => p.ParameterType).Append(m.ReturnType);
            foreach (var t in types.SelectMany(Flatten))
                if (t.Namespace?.StartsWith("FireSharp.Proto.V1", StringComparison.Ordinal) == true || t.Namespace?.StartsWith("Grpc", StringComparison.Ordinal) == true)
                    wire.Add($"{m.Name}: {t.Name}");
        }
        Assert.True(wire.Count == 0, "VmManager uses wire types: " + string.Join(", ", wire));
        // The domain types themselves hold no wire types either.
        foreach (var t in typeof(VmManager).Assembly.GetTypes().Where(t => t.Namespace == "FireSharp.Daemon.Vms" && t.IsPublic))
            foreach (var p in t.GetProperties())
                Assert.False(Flatten(p.PropertyType).Any(x => x.Namespace?.StartsWith("FireSharp.Proto.V1", StringComparison.Ordinal) == true), $"{t.Name}.{p.Name} is a wire type");
    }

    private static IEnumerable<System.Type> Flatten(System.Type t)
    {
        yield return t;
        if (t.HasElementType) foreach (var e in Flatten(t.GetElementType()!)) yield return e;
        foreach (var g in t.IsGenericType ? t.GetGenericArguments() : []) foreach (var e in Flatten(g)) yield return e;
    }

    [Fact]
    public async Task A_record_written_by_an_earlier_daemon_loads_and_is_written_back_in_the_same_format()
    {
        string vmsDir = Path.Combine(Path.GetTempPath(), "fs-records-" + Guid.NewGuid().ToString("N")[..8]);
        string dir = Path.Combine(vmsDir, "vm1");
        Directory.CreateDirectory(dir);
        try
        {
            var created = Timestamp.FromDateTime(new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc));
            var old = new VmRecord
            {
                Vm = new Proto.V1.Vm
                {
                    Id = "vm1", Labels = { ["k"] = "v" }, Spec = VmApiMappingTests.FullSpec(), State = VmState.Stopped, CreatedAt = created, StartedAt = created,
                    Exit = new VmExitInfo { Kind = ExitKind.Reset, Reason = "guest reset", Clean = true, Time = created }, BootTimeMs = 12.5,
                },
                Worker = new WorkerRecord { Pid = 42, StartTime = 7, Socket = "/s" },
                RestoredFrom = new RestoreVmRequest { Id = "vm1", Dir = "/snap", Labels = { ["k"] = "v" }, Paused = true, Overrides = new RestoreOverrides { VsockPath = "/v.sock", DrivePaths = { ["root"] = "/r2" } } },
            };
            await File.WriteAllBytesAsync(Path.Combine(dir, "vm.pb"), old.ToByteArray());

            var store = new VmRecordStore(NullLogger.Instance);
            var stored = Assert.Single(await store.LoadAllAsync(vmsDir, CancellationToken.None));
            Assert.False(stored.HalfCreated);
            Assert.Equal(VmPhase.Stopped, stored.Vm!.Phase);
            Assert.Equal(VmEndKind.Reset, stored.Vm.End!.Kind);
            Assert.Equal("/r2", stored.RestoredFrom!.DrivePaths["root"]);

            // Written back, the record is the same message.
            var entry = new VmEntry("vm1", dir) { Vm = stored.Vm, Worker = stored.Worker, RestoredFrom = stored.RestoredFrom };
            File.Delete(Path.Combine(dir, "vm.pb"));
            store.Save(entry);
            Assert.Equal(old, VmRecord.Parser.ParseFrom(await File.ReadAllBytesAsync(Path.Combine(dir, "vm.pb"))));
            Assert.False(File.Exists(Path.Combine(dir, "vm.pb.tmp")));

            // Once removed, a late save writes nothing (the directory does not come back).
            lock (entry.Gate) entry.Deleted = true;
            store.Remove(entry);
            lock (entry.Gate) entry.Deleted = false; // even a writer that missed the deletion
            store.Save(entry);
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            Directory.Delete(vmsDir, recursive: true);
        }
    }

    [Fact]
    public async Task A_record_still_creating_or_missing_is_a_create_that_never_finished()
    {
        string vmsDir = Path.Combine(Path.GetTempPath(), "fs-records-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(Path.Combine(vmsDir, "a"));
        Directory.CreateDirectory(Path.Combine(vmsDir, "b"));
        try
        {
            var creating = new VmRecord { Vm = new Proto.V1.Vm { Id = "b", Spec = VmApiMappingTests.FullSpec(), State = VmState.Creating } };
            await File.WriteAllBytesAsync(Path.Combine(vmsDir, "b", "vm.pb"), creating.ToByteArray());
            var stored = await new VmRecordStore(NullLogger.Instance).LoadAllAsync(vmsDir, CancellationToken.None);
            Assert.Equal(["a", "b"], stored.Select(s => s.Id));
            Assert.All(stored, s => Assert.True(s.HalfCreated));
        }
        finally
        {
            Directory.Delete(vmsDir, recursive: true);
        }
    }
}
