using System.Reflection;
using NetArchTest.Rules;

namespace FireSharp.Tests.Architecture;

/// <summary>
/// All native calls of the host side go through <c>FireSharp.Kvm.Interop</c> (docs/architecture.md): every
/// P/Invoke (DllImport, or the stub a LibraryImport generates) is declared there, and no other namespace calls
/// Tmds.LibC (or any binding package) directly. The guest agent is exempt: it is a separate program, built for the
/// guest, with its own Interop folder.
/// </summary>
public sealed class InteropConfinementTests
{
    private const string InteropNamespace = "FireSharp.Kvm.Interop";

    /// <summary>Every host assembly that ships (the test and fuzz code aside).</summary>
    private static readonly Assembly[] s_hostAssemblies =
    [
        typeof(FireSharp.Kvm.KvmSystem).Assembly,
        typeof(FireSharp.Vm.MicroVm).Assembly,
        typeof(FireSharp.Framing.Frames).Assembly,
        typeof(FireSharp.Pool.FunctionPool).Assembly,
        typeof(FireSharp.Worker.VmWorker).Assembly,
        typeof(FireSharp.Worker.Protocol.WorkerFraming).Assembly,
        typeof(FireSharp.Agent.Protocol.AgentProtocol).Assembly,
        Assembly.Load("FireSharp.Daemon"),
        Assembly.Load("firesharp"),
    ];

    public static TheoryData<string> HostAssemblies() => new(s_hostAssemblies.Select(a => a.GetName().Name!));

    private static Assembly Host(string name) => s_hostAssemblies.Single(a => a.GetName().Name == name);

    internal static IEnumerable<MethodInfo> PInvokes(Assembly assembly) =>
        assembly.GetTypes().SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public
            | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(m => (m.Attributes & MethodAttributes.PinvokeImpl) != 0);

    private static bool InInterop(Type t) =>
        t.Namespace is { } ns && (ns == InteropNamespace || ns.StartsWith(InteropNamespace + ".", StringComparison.Ordinal));

    [Theory]
    [MemberData(nameof(HostAssemblies))]
    public void Every_pinvoke_is_declared_in_the_interop_namespace(string assemblyName)
    {
        var outside = PInvokes(Host(assemblyName)).Where(m => !InInterop(m.DeclaringType!))
            .Select(m => $"{m.DeclaringType!.FullName}.{m.Name}").ToList();
        Assert.True(outside.Count == 0, $"P/Invoke outside {InteropNamespace} in {assemblyName}: {string.Join(", ", outside)}");
    }

    [Fact]
    public void The_interop_namespace_has_pinvokes_so_the_check_above_sees_them()
    {
        var kvm = PInvokes(typeof(FireSharp.Kvm.KvmSystem).Assembly).ToList();
        Assert.Contains(kvm, m => m.DeclaringType!.Namespace == InteropNamespace);
    }

    [Theory]
    [MemberData(nameof(HostAssemblies))]
    public void Only_the_interop_namespace_calls_a_libc_binding_package(string assemblyName)
    {
        var result = Types.InAssembly(Host(assemblyName))
            .That().DoNotResideInNamespace(InteropNamespace)
            .ShouldNot().HaveDependencyOnAny("Tmds.Linux", "Mono.Unix")
            .GetResult();
        Assert.True(result.IsSuccessful, $"{assemblyName} calls a libc binding outside {InteropNamespace}: "
            + string.Join(", ", result.FailingTypeNames ?? []));
    }
}
