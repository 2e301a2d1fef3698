using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using Xunit.Abstractions;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// Issue 18, must-have 5: 1,000 mutations of a real snapshot (the counter guest's), each with its CRC recomputed and
/// re-signed under the test key, so that they get past the CRC and the MAC to the parser and the restore, as a
/// forger holding the key would. Each restore (in-process, given the key, as an unjailed worker does) must end with
/// the VM running or with a typed rejection (<see cref="SnapshotException"/>), within 20 s, and never crash or hang.
/// Seeded, so a failure repeats.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SnapshotMutationTests(ITestOutputHelper output) : IDisposable
{
    private const int Mutations = 1000;
    private static readonly TimeSpan PerRestore = TimeSpan.FromSeconds(20);

    public void Dispose() => SnapshotTestSupport.CleanUp();

    [SkippableFact]
    public async Task A_thousand_resigned_mutations_each_restore_running_or_are_refused_with_a_typed_error()
    {
        KvmTestSupport.RequireKvm();
        var keys = SnapshotKeys.OpenOrCreate(Path.Combine(SnapshotTestSupport.TempDir(), "keys"));
        string snap = TakeCounterSnapshot(16, keys.Signing);
        string state = Path.Combine(snap, SnapshotWriter.StateFileName);
        string mac = Path.Combine(snap, SnapshotMac.FileName);
        byte[] original = File.ReadAllBytes(state);
        int content = original.Length - SnapshotFormat.HeaderLength;
        var random = new Random(18_5);
        var outcomes = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < Mutations; i++)
        {
            var bytes = (byte[])original.Clone();
            int edits = 1 + random.Next(4);
            for (int e = 0; e < edits; e++)
            {
                int at = SnapshotFormat.HeaderLength + random.Next(content);
                switch (random.Next(4))
                {
                    case 0: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                    case 1: bytes[at] = (byte)random.Next(256); break;
                    case 2: bytes[at] = random.Next(2) == 0 ? (byte)0 : (byte)0xFF; break;
                    default:
                        for (int k = at; k < Math.Min(bytes.Length, at + 8); k++) bytes[k] = 0xFF;
                        break;
                }
            }
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(24),
                System.IO.Hashing.Crc64.HashToUInt64(bytes.AsSpan(SnapshotFormat.HeaderLength)));
            File.WriteAllBytes(state, bytes);
            File.Delete(mac);
            SnapshotMac.Sign(snap, keys.Signing);

            string outcome = await Task.Run(() => RestoreOnce(snap, keys)).WaitAsync(PerRestore);
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }
        output.WriteLine(string.Join(", ", outcomes.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}: {kv.Value}")));
        Assert.Equal(Mutations, outcomes.Values.Sum());
        // The unmutated snapshot still restores: the loop left nothing behind that a restore depends on.
        File.WriteAllBytes(state, original);
        File.Delete(mac);
        SnapshotMac.Sign(snap, keys.Signing);
        Assert.Equal("running", RestoreOnce(snap, keys));
    }

    /// <summary>"running" (the VM's vCPUs started, or the guest already ended on its own), or the rejection's reason; anything else fails the test.</summary>
    private static string RestoreOnce(string snap, SnapshotKeys keys)
    {
        MicroVm vm;
        try
        {
            vm = SnapshotRestore.Restore(snap, new RestoreOverrides { Keys = keys });
        }
        catch (SnapshotException e)
        {
            return e.Reason.ToString();
        }
        using (vm)
        {
            Assert.True(vm.Machine.State is VmState.Running or VmState.Exited, $"restored VM is {vm.Machine.State}");
            return "running";
        }
    }
}
