using System.Diagnostics;
using System.Text.Json;
using FireSharp.Cli;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Functions;
using FireSharp.Tests.Support;
using Xunit.Abstractions;

namespace FireSharp.Tests.Cli;

/// <summary>
/// The real build/firesharp (NativeAOT, `make build`) with its stdout a pipe, as in <c>firesharp vm ls | cat</c>:
/// plain tables that neither wrap nor truncate nor pad, the one JSON shape (checked with jq too), YAML, -q, and
/// the exit codes of the table. VMs come from a real daemon; functions from FunctionService over fake VMs.
/// </summary>
[Collection("kvm")]
public sealed class CliBinaryOutputTests(ITestOutputHelper output)
{
    private static readonly string LongId = "a-vm-with-a-rather-long-id-" + new string('x', 36); // 63 characters, the most allowed

    [SkippableFact]
    public async Task Vm_ls_and_get_print_whole_lines_json_yaml_and_names()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var spec = ApiTestServer.Spec("counter");
        spec.Vsock = new VsockSpec { GuestCid = 7 };
        await d.Client.CreateVmAsync(new CreateVmRequest { Id = LongId, Spec = spec, Labels = { ["team"] = "platform-" + new string('y', 60), ["tier"] = "web" } });
        await d.Client.CreateVmAsync(new CreateVmRequest { Id = "b", Spec = ApiTestServer.Spec("counter") });
        string[] vm = ["vm", "--socket", d.Socket];

        var (code, table, err) = await DaemonUnderTest.RunCliAsync([.. vm, "ls"]);
        Assert.True(code == 0, err);
        AssertPlainTable(table, ["ID", "STATE", "VCPUS", "MEM", "PID", "AGE", "LABELS", "EXIT"], rows: 2);
        Assert.Contains(table.Split('\n'), l => l.StartsWith(LongId + " ", StringComparison.Ordinal) && l.Contains("team=platform-" + new string('y', 60) + ",tier=web", StringComparison.Ordinal));
        (code, table, _) = await DaemonUnderTest.RunCliAsync([.. vm, "ls", "-o", "wide"]);
        Assert.Equal(0, code);
        Assert.Contains("VSOCK", table.Split('\n')[0]);

        (code, var json, err) = await DaemonUnderTest.RunCliAsync([.. vm, "ls", "-o", "json"]);
        Assert.True(code == 0, err);
        Assert.Equal($"{LongId}\nb", Jq(".items[].id", json));
        using (var doc = JsonDocument.Parse(json))
            Assert.Equal("VM_STATE_CREATED", doc.RootElement.GetProperty("items")[0].GetProperty("state").GetString());
        // --json (hidden) is -o json.
        Assert.Equal(json, (await DaemonUnderTest.RunCliAsync([.. vm, "--json", "ls"])).Stdout);

        // get -o json is the whole Vm message (the list's item, vsock included); -o yaml is the same data.
        (code, var one, _) = await DaemonUnderTest.RunCliAsync([.. vm, "get", LongId, "-o", "json"]);
        Assert.Equal(0, code);
        Assert.Equal("7", Jq(".spec.vsock.guest_cid", one));
        Assert.Equal("[]", Jq(".spec.drives | tostring", one));
        Assert.Equal(Jq("-S .items[0] | del(.worker_pid)", json), Jq("-S . | del(.worker_pid)", one));
        (code, var yaml, _) = await DaemonUnderTest.RunCliAsync([.. vm, "get", LongId, "-o", "yaml"]);
        Assert.Equal(0, code);
        Assert.Equal(Jq("-S -c .", one), Jq("-S -c .", YamlToJson(yaml)));

        (code, var names, _) = await DaemonUnderTest.RunCliAsync([.. vm, "ls", "-q"]);
        Assert.Equal(0, code);
        Assert.Equal($"{LongId}\nb\n", names);

        // get as a table: key/value lines, none with trailing spaces.
        (code, var detail, _) = await DaemonUnderTest.RunCliAsync([.. vm, "get", LongId]);
        Assert.Equal(0, code);
        Assert.All(detail.Split('\n'), l => Assert.Equal(l.TrimEnd(), l));
        Assert.Contains(detail.Split('\n'), l => l.StartsWith("vsock:", StringComparison.Ordinal) && l.EndsWith("guest CID 7", StringComparison.Ordinal));

        // Not found: exit 4 and one line; rm -o json prints JSON.
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. vm, "get", "nope"]);
        Assert.Equal(ExitCodes.NotFound, code);
        Assert.StartsWith("firesharp: error: ", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        (code, json, _) = await DaemonUnderTest.RunCliAsync([.. vm, "rm", "b", "-o", "json"]);
        Assert.Equal(0, code);
        Assert.Equal("b", Jq(".id", json));
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = LongId, Force = true });
        d.AssertNothingLeft();
    }

    [Fact]
    public async Task Fn_ls_get_and_rm_print_whole_lines_and_the_same_json_shape()
    {
        await using var server = await FunctionTestServer.StartAsync();
        string longName = "a-function-with-a-long-name-" + new string('z', 30);
        foreach (var name in new[] { longName, "f2" })
            await server.Client.CreateFunctionAsync(new CreateFunctionRequest
            {
                Spec = new FunctionSpec
                {
                    Name = name, Handler = "function.handler", MemoryMib = 128, TimeoutSeconds = 3, Code = new FunctionCode { ImagePath = server.Code },
                    Image = new FunctionImage { KernelPath = server.Kernel, RootfsPath = server.Rootfs },
                },
            });
        string[] fn = ["fn", "--socket", server.Options.Socket];

        var (code, table, err) = await DaemonUnderTest.RunCliAsync([.. fn, "ls"]);
        Assert.True(code == 0, err);
        AssertPlainTable(table, ["NAME", "STATE", "MEM", "TIMEOUT", "VERSION", "RESERVED", "PROVISIONED", "BUSY", "IDLE", "CALLS", "SNAPSTART"], rows: 2);
        Assert.Contains(table.Split('\n'), l => l.StartsWith(longName + " ", StringComparison.Ordinal) && l.Contains(" active ", StringComparison.Ordinal));

        (code, var json, _) = await DaemonUnderTest.RunCliAsync([.. fn, "ls", "-o", "json"]);
        Assert.Equal(0, code);
        Assert.Equal($"{longName}\nf2", Jq(".items[].spec.name", json));
        (code, var one, _) = await DaemonUnderTest.RunCliAsync([.. fn, "get", "f2", "-o", "json"]);
        Assert.Equal(0, code);
        Assert.Equal(Jq("-S -c .items[1] | del(.stats)", json), Jq("-S -c . | del(.stats)", one));
        Assert.Equal("128", Jq(".spec.memory_mib", one));
        (code, var names, _) = await DaemonUnderTest.RunCliAsync([.. fn, "ls", "-o", "name"]);
        Assert.Equal(0, code);
        Assert.Equal($"{longName}\nf2\n", names);
        (code, json, _) = await DaemonUnderTest.RunCliAsync([.. fn, "rm", "f2", "-o", "json"]);
        Assert.Equal(0, code);
        Assert.Equal("f2", Jq(".name", json));
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. fn, "get", "f2"]);
        Assert.Equal(ExitCodes.NotFound, code);
        Assert.StartsWith("firesharp: error: ", err);
        // A memory size with units reaches the daemon as MiB.
        (code, _, err) = await DaemonUnderTest.RunCliAsync([.. fn, "update", longName, "--mem", "1G"]);
        Assert.True(code == 0, err);
        Assert.Equal(1024, (await server.Client.GetFunctionAsync(new GetFunctionRequest { Name = longName })).Spec.MemoryMib);
    }

    [Fact]
    public async Task No_daemon_and_bad_input_from_the_binary()
    {
        string socket = Path.Combine(TestPaths.TempDir(), "firesharp.sock");
        var (code, stdout, err) = await DaemonUnderTest.RunCliAsync(["vm", "ls", "--socket", socket]);
        Assert.Equal(ExitCodes.Unreachable, code);
        Assert.Equal("", stdout);
        Assert.StartsWith($"firesharp: error: no daemon at {socket} (is firesharp.service running? systemctl status firesharp)\n", err);
        (code, stdout, err) = await DaemonUnderTest.RunCliAsync(["vm", "create", "x", "--kernel", "/k", "--mem-mib", "1G1", "--socket", socket]);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Equal("", stdout);
        Assert.Equal(2, err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    /// <summary>A piped table: a header with every column whole, one line per row, no padding at line ends.</summary>
    internal static void AssertPlainTable(string text, string[] headers, int rows)
    {
        var lines = text.Split('\n');
        Assert.Equal("", lines[^1]); // ends with a newline
        lines = lines[..^1];
        Assert.Equal(rows + 1, lines.Length);
        Assert.Equal(headers, lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.All(lines, l => Assert.Equal(l.TrimEnd(), l));
        Assert.All(lines, l => Assert.DoesNotContain('…', l));
        Assert.All(lines, l => Assert.DoesNotContain('\u2502', l)); // no box drawing
        Assert.All(lines[1..], l => Assert.Equal(headers.Length, l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length));
    }

    /// <summary>jq, a JSON tool the project did not write, on <paramref name="json"/> (raw output, trimmed).</summary>
    internal static string Jq(string filter, string json)
    {
        // Leading options ("-S -c .items[0]") go before the filter.
        var args = new List<string> { "-r" };
        while (filter.StartsWith('-'))
        {
            var parts = filter.Split(' ', 2);
            args.Add(parts[0]);
            filter = parts[1];
        }
        args.Add(filter);
        return Tool("jq", args, json).Trim();
    }

    internal static string YamlToJson(string yaml) =>
        Tool("python3", ["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)"], yaml);

    private static string Tool(string program, IEnumerable<string> args, string input)
    {
        var psi = new ProcessStartInfo(program, args) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(input);
        p.StandardInput.Close();
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{program} failed: {stderr}\ninput:\n{input}");
        return stdout;
    }
}
