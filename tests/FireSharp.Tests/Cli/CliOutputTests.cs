using System.Text.Json;
using FireSharp.Cli.Output;
using FireSharp.Proto.V1;

namespace FireSharp.Tests.Cli;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>The output layer of the CLI: plain tables for pipes, the one JSON shape, and YAML that parses back to the same data.</summary>
public class CliOutputTests
{
    internal static Vm SampleVm(string id = "web-1") => new()
    {
        Id = id,
        State = VmState.Running,
        WorkerPid = 42,
        Labels = { ["team"] = "a b", ["yes"] = "no" },
        Spec = new VmSpec
        {
            Kernel = new KernelSpec { Path = "/k/vmlinux", Cmdline = "console=ttyS0 # not a comment: really" },
            Machine = new MachineSpec { Vcpus = 2, MemMib = 512 },
            Drives = { new DriveSpec { Id = "root", Path = "/img/root.ext4", Root = true } },
            NetworkInterfaces = { new NetworkInterfaceSpec { Id = "eth0", Auto = true, Mac = "02:00:00:00:00:01", Ip = "10.0.0.2/24" } },
            Vsock = new VsockSpec { GuestCid = 3 },
        },
    };

    [Fact]
    public void A_piped_table_keeps_every_cell_whole_with_no_trailing_spaces()
    {
        var table = new TextTable(["NAME", "STATE", "TIMEOUT", "RESERVED", "CALLS"]);
        string longName = "a-function-with-a-very-long-name-" + new string('x', 120);
        table.Add([longName, "active", "3s", "", "12"]);
        table.Add(["short", "active", "900s", "5", "1\n2"]);
        var lines = table.ToPlainText().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        Assert.All(lines, l => Assert.Equal(l.TrimEnd(), l));
        Assert.Equal(["NAME", "STATE", "TIMEOUT", "RESERVED", "CALLS"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal([longName, "active", "3s", "-", "12"], lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(["short", "active", "900s", "5", "1", "2"], lines[2].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        // Aligned: every column starts at the same offset on every line.
        int state = lines[0].IndexOf("STATE", StringComparison.Ordinal);
        Assert.All(lines.Skip(1), l => Assert.Equal("active", l.Substring(state, 6)));
    }

    [Fact]
    public void Json_is_protobuf_json_with_proto_field_names_and_the_whole_vm()
    {
        using var doc = JsonDocument.Parse(ProtoJson.Format(SampleVm()));
        var vm = doc.RootElement;
        Assert.Equal("VM_STATE_RUNNING", vm.GetProperty("state").GetString());
        Assert.Equal(42, vm.GetProperty("worker_pid").GetInt32());
        Assert.Equal(0, vm.GetProperty("boot_time_ms").GetDouble()); // defaults are written out too
        var spec = vm.GetProperty("spec");
        Assert.Equal("/img/root.ext4", spec.GetProperty("drives")[0].GetProperty("path").GetString());
        Assert.Equal("10.0.0.2/24", spec.GetProperty("network_interfaces")[0].GetProperty("ip").GetString());
        Assert.Equal(3, spec.GetProperty("vsock").GetProperty("guest_cid").GetInt32());
        Assert.Equal("512", spec.GetProperty("machine").GetProperty("mem_mib").GetString()); // int64 is a JSON string in protobuf JSON
    }

    [Fact]
    public void A_list_is_an_object_with_items_in_every_format()
    {
        var output = new StringWriter();
        new Printer(OutputFormat.Json, output, terminal: false).List([SampleVm("a"), SampleVm("b")], v => v.Id, [new Column<Vm>("ID", v => v.Id)]);
        using var doc = JsonDocument.Parse(output.ToString());
        Assert.Equal(["a", "b"], doc.RootElement.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("id").GetString()));

        output = new StringWriter();
        new Printer(OutputFormat.Json, output, terminal: false).List(Array.Empty<Vm>(), v => v.Id, [new Column<Vm>("ID", v => v.Id)]);
        using var empty = JsonDocument.Parse(output.ToString());
        Assert.Equal(0, empty.RootElement.GetProperty("items").GetArrayLength());

        output = new StringWriter();
        new Printer(OutputFormat.Name, output, terminal: false).List([SampleVm("a"), SampleVm("b")], v => v.Id, [new Column<Vm>("ID", v => v.Id)]);
        Assert.Equal("a\nb\n", output.ToString().ReplaceLineEndings("\n"));
    }

    [Fact]
    public void Wide_shows_the_wide_only_columns()
    {
        Column<Vm>[] columns = [new("ID", v => v.Id), new("KERNEL", v => v.Spec.Kernel.Path, WideOnly: true)];
        var narrow = new StringWriter();
        new Printer(OutputFormat.Table, narrow, terminal: false).List([SampleVm()], v => v.Id, columns);
        var wide = new StringWriter();
        new Printer(OutputFormat.Wide, wide, terminal: false).List([SampleVm()], v => v.Id, columns);
        Assert.Equal("ID\nweb-1\n", narrow.ToString());
        Assert.Equal("ID      KERNEL\nweb-1   /k/vmlinux\n", wide.ToString());
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("")]
    [InlineData("true")]
    [InlineData("No")]
    [InlineData("null")]
    [InlineData("~")]
    [InlineData("123")]
    [InlineData("1e5")]
    [InlineData("0x1F")]
    [InlineData("- item")]
    [InlineData("key: value")]
    [InlineData("a # comment")]
    [InlineData("'quoted'")]
    [InlineData("\"dq\"")]
    [InlineData("back\\slash")]
    [InlineData("line\nbreak\ttab")]
    [InlineData(" leading")]
    [InlineData("trailing ")]
    [InlineData("[x]")]
    [InlineData("{x}")]
    [InlineData("&anchor")]
    [InlineData("*alias")]
    [InlineData("!tag")]
    [InlineData("%dir")]
    [InlineData("@at")]
    [InlineData("`tick")]
    [InlineData("2026-12-07T17:00:00Z")]
    [InlineData("/var/lib/firesharp/vms/a")]
    [InlineData("ünïcode ✓")]
    public void Yaml_strings_read_back_as_the_same_string(string value)
    {
        string yaml = Yaml.FromJson(JsonSerializer.Serialize(new Dictionary<string, string> { [value] = value, ["k"] = value }, CliTestJson.Default.DictionaryStringString));
        var parsed = ParseYamlWithPython(yaml);
        Assert.Equal(value, parsed.GetProperty("k").GetString());
        Assert.Equal(value, parsed.GetProperty(value).GetString());
    }

    [Fact]
    public void Yaml_of_a_vm_list_parses_to_the_same_data_as_its_json()
    {
        string json = ProtoJson.ItemsCompact([SampleVm("a"), SampleVm("b")]);
        var fromYaml = ParseYamlWithPython(Yaml.FromJson(json));
        using var fromJson = JsonDocument.Parse(json);
        Assert.Equal(Normalize(fromJson.RootElement), Normalize(fromYaml));
    }

    private static string Normalize(JsonElement e) => JsonSerializer.Serialize(e);

    /// <summary>Parses YAML with PyYAML (python3-yaml, make deps): a parser this project did not write.</summary>
    private static JsonElement ParseYamlWithPython(string yaml)
    {
        using var doc = JsonDocument.Parse(CliBinaryOutputTests.YamlToJson(yaml));
        return doc.RootElement.Clone();
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(Dictionary<string, string>))]
[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
internal sealed partial class CliTestJson : System.Text.Json.Serialization.JsonSerializerContext;
