using System.Reflection;
using System.Xml.Linq;
using FireSharp.Tests.Support;
using NetArchTest.Rules;

namespace FireSharp.Tests.Architecture;

/// <summary>
/// The layering of docs/architecture.md, stated in code so that a violation fails <c>make test</c>:
/// the project reference graph (from the .csproj files, the agent included), the assemblies each layer
/// may load (compiled references), namespace rules inside the VMM core, and no cycles anywhere.
/// </summary>
public sealed class LayeringTests
{
    /// <summary>Each project and the FireSharp projects it may reference (directly). Everything else is forbidden.</summary>
    private static readonly Dictionary<string, string[]> s_allowedProjectReferences = new()
    {
        ["FireSharp.Kvm"] = [],
        ["FireSharp.Vmm"] = ["FireSharp.Kvm"],
        ["FireSharp.Framing"] = [],
        ["FireSharp.Agent.Protocol"] = ["FireSharp.Framing"],
        ["FireSharp.Worker.Protocol"] = ["FireSharp.Framing"],
        ["FireSharp.Pool"] = [],
        ["FireSharp.Worker"] = ["FireSharp.Vmm", "FireSharp.Worker.Protocol"],
        ["FireSharp.Daemon"] = ["FireSharp.Vmm", "FireSharp.Pool", "FireSharp.Worker.Protocol", "FireSharp.Agent.Protocol"],
        ["FireSharp.Cli"] = ["FireSharp.Daemon", "FireSharp.Vmm"],
        ["Agent"] = ["FireSharp.Agent.Protocol"],
    };

    /// <summary>Assembly-name prefixes each built assembly must not reference.</summary>
    private static readonly (Assembly Assembly, string[] Forbidden)[] s_forbiddenPackages =
    [
        (typeof(FireSharp.Kvm.KvmSystem).Assembly, ["OpenTelemetry", "Grpc", "Google.Protobuf", "Microsoft.AspNetCore", "Serilog", "Spectre", "System.CommandLine"]),
        (typeof(FireSharp.Vm.MicroVm).Assembly, ["OpenTelemetry", "Grpc", "Google.Protobuf", "Microsoft.AspNetCore", "Serilog", "Spectre", "System.CommandLine"]),
        (typeof(FireSharp.Pool.FunctionPool).Assembly, ["OpenTelemetry", "Grpc", "Google.Protobuf", "Microsoft.AspNetCore", "Serilog", "Spectre", "FireSharp."]),
        (typeof(FireSharp.Worker.VmWorker).Assembly, ["OpenTelemetry", "Grpc", "Microsoft.AspNetCore", "Serilog", "Spectre", "FireSharp.Daemon", "FireSharp.Pool"]),
        (typeof(FireSharp.Framing.Frames).Assembly, ["Grpc", "Microsoft.AspNetCore", "FireSharp."]),
        (typeof(FireSharp.Agent.Protocol.AgentProtocol).Assembly, ["Grpc", "Microsoft.AspNetCore", "FireSharp.Daemon", "FireSharp.Vmm", "FireSharp.Kvm"]),
        (typeof(FireSharp.Worker.Protocol.WorkerFraming).Assembly, ["Grpc", "Microsoft.AspNetCore", "FireSharp.Daemon", "FireSharp.Vmm", "FireSharp.Kvm"]),
        // The fuzz targets run inside this test process too: only the fuzzer binary may load SharpFuzz.
        (typeof(FireSharp.Fuzz.FuzzTarget).Assembly, ["SharpFuzz"]),
    ];

    public static TheoryData<string> Projects() => new(s_allowedProjectReferences.Keys);

    [Theory]
    [MemberData(nameof(Projects))]
    public void ProjectReferencesFollowTheLayering(string project)
    {
        var references = ProjectReferences(project);
        var unexpected = references.Except(s_allowedProjectReferences[project]).ToList();
        Assert.True(unexpected.Count == 0, $"{project} references {string.Join(", ", unexpected)}, which docs/architecture.md does not allow");
    }

    [Fact]
    public void EveryProjectInTheSolutionIsInTheLayering()
    {
        var projects = Directory.EnumerateFiles(Path.Combine(TestPaths.RepoRoot, "src"), "*.csproj", SearchOption.AllDirectories)
            .Where(p => !p.Contains("/obj/", StringComparison.Ordinal))
            .Select(Path.GetFileNameWithoutExtension).ToList();
        Assert.NotEmpty(projects);
        foreach (var p in projects)
            Assert.True(s_allowedProjectReferences.ContainsKey(p!), $"src project {p} is not in the layering (add it here and to docs/architecture.md)");
    }

    [Fact]
    public void ProjectGraphHasNoCycles()
    {
        var graph = s_allowedProjectReferences.Keys.ToDictionary(p => p, p => (IReadOnlyList<string>)ProjectReferences(p));
        Assert.Null(FindCycle(graph));
    }

    [Fact]
    public void LayersDoNotLoadForbiddenAssemblies()
    {
        foreach (var (assembly, forbidden) in s_forbiddenPackages)
        {
            var bad = assembly.GetReferencedAssemblies().Select(a => a.Name ?? "")
                .Where(n => forbidden.Any(f => n.StartsWith(f, StringComparison.Ordinal))).ToList();
            Assert.True(bad.Count == 0, $"{assembly.GetName().Name} references {string.Join(", ", bad)}");
        }
    }

    [Fact]
    public void DevicesNeverSeeTheRunLoopOrSnapshots()
    {
        var result = Types.InAssembly(typeof(FireSharp.Vm.MicroVm).Assembly)
            .That().ResideInNamespace("FireSharp.Devices")
            .ShouldNot().HaveDependencyOnAny("FireSharp.Vm", "FireSharp.Snapshot", "FireSharp.Boot")
            .GetResult();
        Assert.True(result.IsSuccessful, "devices depend on the run loop: " + string.Join(", ", result.FailingTypeNames ?? []));
    }

    /// <summary>The device-specific namespaces under FireSharp.Devices.Virtio.</summary>
    private static readonly string[] s_virtioDeviceNamespaces =
        ["FireSharp.Devices.Virtio.Net", "FireSharp.Devices.Virtio.Vsock", "FireSharp.Devices.Virtio.Rng"];

    [Fact]
    public void GenericVirtioCodeNeverSeesAParticularDevice()
    {
        var assembly = typeof(FireSharp.Vm.MicroVm).Assembly;
        var present = assembly.GetTypes().Select(t => t.Namespace).OfType<string>().Distinct().ToList();
        Assert.All(s_virtioDeviceNamespaces, ns => Assert.Contains(ns, present));
        var result = Types.InAssembly(assembly)
            .That().ResideInNamespaceMatching(@"^FireSharp\.Devices\.Virtio$")
            .ShouldNot().HaveDependencyOnAny(s_virtioDeviceNamespaces)
            .GetResult();
        Assert.True(result.IsSuccessful, "generic virtio code depends on a device: " + string.Join(", ", result.FailingTypeNames ?? []));
    }

    [Fact]
    public void NoDeviceSeesAnother()
    {
        var assembly = typeof(FireSharp.Vm.MicroVm).Assembly;
        foreach (var device in s_virtioDeviceNamespaces)
        {
            var result = Types.InAssembly(assembly)
                .That().ResideInNamespace(device)
                .ShouldNot().HaveDependencyOnAny([.. s_virtioDeviceNamespaces.Where(other => other != device)])
                .GetResult();
            Assert.True(result.IsSuccessful, $"{device} depends on another device: " + string.Join(", ", result.FailingTypeNames ?? []));
        }
    }

    /// <summary>
    /// The same rule on the source, where an unused <c>using</c> of a device's namespace (which compiles to nothing)
    /// would still invite the next edge: no file of src/Vmm/Devices/Virtio itself (not its device folders) names one.
    /// </summary>
    [Fact]
    public void GenericVirtioFilesImportNoDeviceNamespace()
    {
        var dir = Path.Combine(TestPaths.RepoRoot, "src", "Vmm", "Devices", "Virtio");
        var files = Directory.GetFiles(dir, "*.cs", SearchOption.TopDirectoryOnly);
        Assert.NotEmpty(files);
        var offending = files.SelectMany(f => File.ReadLines(f)
                .Where(line => line.TrimStart().StartsWith("using ", StringComparison.Ordinal)
                    && s_virtioDeviceNamespaces.Any(ns => line.Contains(ns, StringComparison.Ordinal)))
                .Select(line => $"{Path.GetFileName(f)}: {line.Trim()}"))
            .ToList();
        Assert.True(offending.Count == 0, "generic virtio files import a device namespace: " + string.Join("; ", offending));
    }

    /// <summary>
    /// A project compiles only its own folder: no <c>&lt;Compile Include&gt;</c> reaches outside it (the guest agent
    /// once compiled host files this way, which the project reference graph does not show).
    /// </summary>
    [Theory]
    [MemberData(nameof(Projects))]
    public void ProjectsCompileNoFilesFromOutsideTheirFolder(string project)
    {
        var path = ProjectPath(project);
        var folder = Path.GetDirectoryName(path)! + Path.DirectorySeparatorChar;
        var outside = XDocument.Load(path).Descendants("Compile")
            .Select(e => e.Attribute("Include")?.Value).OfType<string>()
            .Where(include => !Path.GetFullPath(Path.Combine(folder, include.Replace('\\', '/'))).StartsWith(folder, StringComparison.Ordinal))
            .ToList();
        Assert.True(outside.Count == 0, $"{project} compiles files outside its folder: {string.Join(", ", outside)}");
    }

    [Fact]
    public void BootSeesOnlyMemoryAndKvm()
    {
        var result = Types.InAssembly(typeof(FireSharp.Vm.MicroVm).Assembly)
            .That().ResideInNamespace("FireSharp.Boot")
            .ShouldNot().HaveDependencyOnAny("FireSharp.Vm", "FireSharp.Snapshot", "FireSharp.Devices")
            .GetResult();
        Assert.True(result.IsSuccessful, "boot code depends on a higher layer: " + string.Join(", ", result.FailingTypeNames ?? []));
    }

    /// <summary>Namespace cycles inside one assembly compile, so they are checked here.</summary>
    public static TheoryData<string> LayeredAssemblies() => new(["FireSharp.Kvm", "FireSharp.Vmm", "FireSharp.Pool", "FireSharp.Daemon"]);

    [Theory]
    [MemberData(nameof(LayeredAssemblies))]
    public void NamespacesHaveNoCycles(string assemblyName)
    {
        var assembly = Assembly.Load(assemblyName);
        var namespaces = assembly.GetTypes().Select(t => t.Namespace).OfType<string>()
            .Where(n => n.StartsWith("FireSharp.", StringComparison.Ordinal) && !n.StartsWith("FireSharp.Proto", StringComparison.Ordinal))
            .Select(TopNamespace).Distinct().ToList();
        // NetArchTest matches dependencies by name prefix, so "FireSharp.Kvm" would also match FireSharp.Kvm.Interop:
        // ask about the target group's type names instead.
        var typesOf = assembly.GetTypes().Where(t => t.Namespace is not null && namespaces.Contains(TopNamespace(t.Namespace)) && !t.IsNested)
            .GroupBy(t => TopNamespace(t.Namespace!)).ToDictionary(g => g.Key, g => g.Select(t => t.FullName!).ToArray());
        var graph = new Dictionary<string, IReadOnlyList<string>>();
        foreach (var from in namespaces)
        {
            graph[from] = namespaces.Where(to => to != from && typesOf.ContainsKey(to) && Types.InAssembly(assembly)
                .That().ResideInNamespace(from).And().HaveDependencyOnAny(typesOf[to]).GetTypes()
                .Any(t => TopNamespace(t.Namespace ?? "") == from)).ToList();
        }
        var cycle = FindCycle(graph);
        Assert.True(cycle is null, $"namespace cycle in {assemblyName}: {cycle}");
    }

    /// <summary>
    /// The namespace at the granularity the layering speaks of (FireSharp.Devices.Virtio.Net → FireSharp.Devices),
    /// except the interop layer, which sits below FireSharp.Kvm and FireSharp.Memory. Inside FireSharp.Devices the
    /// device kinds and their registration refer to each other by design (each kind derives from the manager's
    /// VirtioDeviceKind; DeviceKinds lists every kind), so the rules between its sub-namespaces are stated as
    /// dependency rules instead (<see cref="GenericVirtioCodeNeverSeesAParticularDevice"/>,
    /// <see cref="NoDeviceSeesAnother"/>).
    /// </summary>
    private static string TopNamespace(string ns)
    {
        if (ns.StartsWith("FireSharp.Kvm.Interop", StringComparison.Ordinal)) return "FireSharp.Kvm.Interop";
        var parts = ns.Split('.');
        return parts.Length <= 2 ? ns : $"{parts[0]}.{parts[1]}";
    }

    private static string ProjectPath(string project) =>
        Directory.EnumerateFiles(Path.Combine(TestPaths.RepoRoot, "src"), project + ".csproj", SearchOption.AllDirectories)
            .Single(p => !p.Contains("/obj/", StringComparison.Ordinal));

    private static List<string> ProjectReferences(string project)
    {
        return XDocument.Load(ProjectPath(project)).Descendants("ProjectReference")
            .Select(e => Path.GetFileNameWithoutExtension(e.Attribute("Include")!.Value.Replace('\\', '/'))).ToList();
    }

    /// <summary>A cycle as "a -> b -> a", or null.</summary>
    internal static string? FindCycle(IReadOnlyDictionary<string, IReadOnlyList<string>> graph)
    {
        var state = new Dictionary<string, int>(); // 1 = on the stack, 2 = done
        var stack = new List<string>();
        string? Visit(string node)
        {
            state[node] = 1;
            stack.Add(node);
            foreach (var next in graph.TryGetValue(node, out var n) ? n : [])
            {
                if (state.GetValueOrDefault(next) == 1)
                    return string.Join(" -> ", stack.Skip(stack.IndexOf(next)).Append(next));
                if (state.GetValueOrDefault(next) == 0 && Visit(next) is { } found) return found;
            }
            stack.RemoveAt(stack.Count - 1);
            state[node] = 2;
            return null;
        }
        foreach (var node in graph.Keys)
            if (state.GetValueOrDefault(node) == 0 && Visit(node) is { } cycle) return cycle;
        return null;
    }

    [Fact]
    public void FindCycleFindsACycle()
    {
        var graph = new Dictionary<string, IReadOnlyList<string>> { ["a"] = ["b"], ["b"] = ["c"], ["c"] = ["a"], ["d"] = [] };
        Assert.Equal("a -> b -> c -> a", FindCycle(graph));
        Assert.Null(FindCycle(new Dictionary<string, IReadOnlyList<string>> { ["a"] = ["b"], ["b"] = [] }));
    }
}
