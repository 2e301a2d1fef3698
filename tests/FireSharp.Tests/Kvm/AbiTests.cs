using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Kvm;

/// <summary>
/// Pins the C# mirror of &lt;linux/kvm.h&gt; against the machine's own kernel headers: a small C probe
/// (tests/abi/kvm-abi-probe.c) is compiled and run, and every size, offset, ioctl number and constant it
/// prints must match the C# definitions.
/// </summary>
public class AbiTests
{
    private static readonly Lazy<Dictionary<string, ulong>> s_probe = new(RunProbe);

    private static Dictionary<string, ulong> RunProbe()
    {
        string source = Path.Combine(TestPaths.RepoRoot, "tests", "abi", "kvm-abi-probe.c");
        string exe = Path.Combine(TestPaths.TempDir(), "kvm-abi-probe");
        Run("gcc", $"-O0 -o {exe} {source}");
        var output = Run(exe, "");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .ToDictionary(p => p[0], p => ulong.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    private static string Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), $"{file} timed out");
        Assert.True(p.ExitCode == 0, $"{file} {args} failed: {stderr}");
        return stdout;
    }

    private static ulong Probe(string key)
    {
        Assert.True(s_probe.Value.TryGetValue(key, out var v), $"probe did not print {key}");
        return v;
    }

    public static TheoryData<string> StructNames => new(typeof(kvm_regs).Assembly.GetTypes()
        .Where(t => t.Namespace == typeof(kvm_regs).Namespace && t.Name.StartsWith("kvm_", StringComparison.Ordinal) && t.IsValueType)
        .Select(t => t.Name));

    [Theory]
    [MemberData(nameof(StructNames))]
    public void StructSizeMatchesKernelHeader(string name)
    {
        var type = typeof(kvm_regs).Assembly.GetType($"{typeof(kvm_regs).Namespace}.{name}")!;
        Assert.Equal(Probe("sizeof." + name), (ulong)Marshal.SizeOf(type));
    }

    [Fact]
    public void FieldOffsetsMatchKernelHeader()
    {
        var checkedCount = 0;
        foreach (var (key, value) in s_probe.Value.Where(kv => kv.Key.StartsWith("offsetof.", StringComparison.Ordinal)))
        {
            var parts = key.Split('.'); // offsetof.struct.field[.subfield]
            if (parts[1] == "kvm_run")
            {
                // kvm_run is read at fixed offsets: KvmRunOffsets.<field> or <union>_<field>.
                string name = string.Join('_', parts.Skip(2));
                var field = typeof(KvmRunOffsets).GetField(name == "io" ? "exit_union" : name);
                Assert.True(field is not null, $"KvmRunOffsets has no {name}");
                Assert.True((ulong)(int)field!.GetValue(null)! == value, $"{key}: C says {value}, C# says {field.GetValue(null)}");
            }
            else
            {
                var type = typeof(kvm_regs).Assembly.GetType($"{typeof(kvm_regs).Namespace}.{parts[1]}")!;
                string fieldName = parts[2] switch
                {
                    // vcpu_events nests anonymous structs that the C# mirror flattens to prefix_field.
                    "interrupt" when parts[1] == "kvm_vcpu_events" => "interrupt_injected",
                    "nmi" when parts[1] == "kvm_vcpu_events" => "nmi_injected",
                    "smi" when parts[1] == "kvm_vcpu_events" => "smi_smm",
                    "base" => "base",
                    var f => f,
                };
                // A flexible array member (kvm_msrs.entries, kvm_cpuid2.entries) is not mirrored: it starts at the header's end.
                ulong offset = type.GetField(fieldName) is null ? (ulong)Marshal.SizeOf(type) : (ulong)Marshal.OffsetOf(type, fieldName);
                Assert.True(offset == value, $"{key}: C says {value}, C# says {offset}");
            }
            checkedCount++;
        }
        Assert.True(checkedCount > 50, $"only {checkedCount} offsets checked");
    }

    [Fact]
    public void IoctlNumbersMatchKernelHeader()
    {
        var fields = typeof(KvmIoctls).GetFields(BindingFlags.Public | BindingFlags.Static);
        Assert.NotEmpty(fields);
        foreach (var f in fields)
            Assert.True(Probe("ioctl." + f.Name) == (uint)f.GetValue(null)!, $"{f.Name}: C says 0x{Probe("ioctl." + f.Name):x}, C# says 0x{(uint)f.GetValue(null)!:x}");
    }

    [Fact]
    public void ConstantsMatchKernelHeader()
    {
        var fields = typeof(KvmConstants).GetFields(BindingFlags.Public | BindingFlags.Static);
        Assert.True(fields.Length > 40);
        foreach (var f in fields)
            Assert.True(Probe("const." + f.Name) == (uint)f.GetValue(null)!, $"{f.Name}: C says {Probe("const." + f.Name)}, C# says {f.GetValue(null)}");
    }
}
