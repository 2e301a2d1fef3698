using System.Collections.Frozen;

namespace FireSharp.Daemon.Auth;

/// <summary>What a client may do; each role can do everything the one before it can.</summary>
public enum ApiRole
{
    /// <summary>Nothing: a client the configuration does not name.</summary>
    None = 0,
    /// <summary>Read: get, list and watch VMs and functions, read consoles and logs, health and reflection.</summary>
    Viewer = 1,
    /// <summary>Also run VMs: create, start, pause, resume, stop, delete, console input, exec, invoke.</summary>
    Operator = 2,
    /// <summary>Also what reads or writes host files or sets daemon-wide limits: snapshot, restore, manage functions and their concurrency.</summary>
    Admin = 3,
}

/// <summary>
/// The one table of the role each gRPC method needs, by its full name (<c>/package.Service/Method</c>). A method
/// missing here is refused to everyone (a unit test checks that every method of every served service is listed).
/// Console input is the one finer rule: StreamConsole needs <see cref="ApiRole.Viewer"/> to read, and
/// <see cref="ApiRole.Operator"/> for any message that carries input (<see cref="ConsoleInputRole"/>).
/// </summary>
public static class ApiRoles
{
    public const ApiRole ConsoleInputRole = ApiRole.Operator;
    public const string StreamConsoleMethod = "/firesharp.v1.VmService/StreamConsole";

    private static readonly FrozenDictionary<string, ApiRole> s_required = new Dictionary<string, ApiRole>
    {
        ["/firesharp.v1.VmService/GetVm"] = ApiRole.Viewer,
        ["/firesharp.v1.VmService/ListVms"] = ApiRole.Viewer,
        ["/firesharp.v1.VmService/WatchEvents"] = ApiRole.Viewer,
        [StreamConsoleMethod] = ApiRole.Viewer,
        ["/firesharp.v1.VmService/StreamVmLogs"] = ApiRole.Viewer,
        ["/firesharp.v1.VmService/CreateVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/StartVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/PauseVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/ResumeVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/StopVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/DeleteVm"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/Exec"] = ApiRole.Operator,
        // Files in the guest (root's, through the agent): no more than Exec can reach; no host file is touched.
        ["/firesharp.v1.VmService/CopyIn"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/CopyOut"] = ApiRole.Operator,
        // A running VM's rate limiters: an operator may set them at create time, so changing them is no more.
        ["/firesharp.v1.VmService/UpdateRateLimiters"] = ApiRole.Operator,
        ["/firesharp.v1.VmService/CreateSnapshot"] = ApiRole.Admin,
        ["/firesharp.v1.VmService/RestoreVm"] = ApiRole.Admin,

        ["/firesharp.v1.FunctionService/GetFunction"] = ApiRole.Viewer,
        ["/firesharp.v1.FunctionService/ListFunctions"] = ApiRole.Viewer,
        ["/firesharp.v1.FunctionService/GetAccountSettings"] = ApiRole.Viewer,
        ["/firesharp.v1.FunctionService/StreamFunctionLogs"] = ApiRole.Viewer,
        ["/firesharp.v1.FunctionService/Invoke"] = ApiRole.Operator,
        ["/firesharp.v1.FunctionService/CreateFunction"] = ApiRole.Admin,
        ["/firesharp.v1.FunctionService/UpdateFunctionConfiguration"] = ApiRole.Admin,
        ["/firesharp.v1.FunctionService/UpdateFunctionCode"] = ApiRole.Admin,
        ["/firesharp.v1.FunctionService/DeleteFunction"] = ApiRole.Admin,
        ["/firesharp.v1.FunctionService/PutFunctionConcurrency"] = ApiRole.Admin,
        ["/firesharp.v1.FunctionService/PutProvisionedConcurrency"] = ApiRole.Admin,

        ["/grpc.health.v1.Health/Check"] = ApiRole.Viewer,
        ["/grpc.health.v1.Health/Watch"] = ApiRole.Viewer,
        ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = ApiRole.Viewer,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Every method with its role.</summary>
    public static IReadOnlyDictionary<string, ApiRole> All => s_required;

    /// <summary>The role <paramref name="method"/> needs; null for a method nobody may call.</summary>
    public static ApiRole? Required(string method) => s_required.TryGetValue(method, out var role) ? role : null;

    /// <summary>The name used in configuration and messages: viewer, operator, admin.</summary>
    public static string Name(ApiRole role) => role switch
    {
        ApiRole.Viewer => "viewer",
        ApiRole.Operator => "operator",
        ApiRole.Admin => "admin",
        _ => "none",
    };

    /// <summary>Parses viewer, operator or admin (any case); null for anything else.</summary>
    public static ApiRole? Parse(string text) => text.ToUpperInvariant() switch
    {
        "VIEWER" => ApiRole.Viewer,
        "OPERATOR" => ApiRole.Operator,
        "ADMIN" => ApiRole.Admin,
        _ => null,
    };
}
