using System.CommandLine;
using System.Text.Json;
using FireSharp.Daemon;
using FireSharp.Daemon.Configuration;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp config check</c> and <c>firesharp config show</c>: the daemon's configuration as <c>firesharp serve</c>
/// would load it (the same sources: <c>--config FILE</c> or /etc/firesharp/config.json, FIRESHARP_* variables, and
/// any <c>--Key=value</c> given after the command). Exit codes: 0 valid, 2 invalid (each problem on its own line).
/// </summary>
internal static class ConfigCommands
{
    public static Command Create()
    {
        var command = new Command("config", "check or show the daemon's configuration (as firesharp serve loads it)");
        command.Subcommands.Add(Check());
        command.Subcommands.Add(Show());
        return command;
    }

    private static Option<string?> ConfigFile() =>
        new("--config") { Description = $"JSON config file (default {DaemonOptions.DefaultConfigFile}, if it exists)" };

    private static Command Check()
    {
        var config = ConfigFile();
        var command = new Command("check", "validate the configuration: exit 0 if firesharp serve would accept it, 2 (listing every problem) if not")
        {
            config,
        };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(parse => RunCheck(parse.GetValue(config), [.. parse.UnmatchedTokens]));
        return command;
    }

    private static Command Show()
    {
        var config = ConfigFile();
        var output = new Option<string>("--output", "-o") { Description = "table or json", DefaultValueFactory = _ => "table" };
        output.AcceptOnlyFromAmong("table", "json");
        var command = new Command("show", "the effective configuration: every key, its value and where it comes from (default, file, environment, command line)")
        {
            config, output,
        };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(parse => RunShow(parse.GetValue(config), parse.GetValue(output)!, [.. parse.UnmatchedTokens]));
        return command;
    }

    /// <summary>Loads as serve does; null (after printing why, exit code in <paramref name="exit"/>) if it cannot.</summary>
    private static (Microsoft.Extensions.Configuration.IConfigurationRoot Root, LoadedConfiguration Loaded)? Load(string name, string? file, string[] settings, out int exit)
    {
        exit = 0;
        try
        {
            var root = DaemonConfiguration.Build(file, settings);
            return (root, DaemonConfiguration.Load(root));
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or IOException)
        {
            Console.Error.WriteLine($"firesharp config {name}: {e.Message}");
            exit = 2;
            return null;
        }
    }

    private static int RunCheck(string? file, string[] settings)
    {
        if (Load("check", file, settings, out int exit) is not { } l) return exit;
        if (!l.Loaded.Ok)
        {
            foreach (var problem in l.Loaded.Problems) Console.Error.WriteLine($"firesharp config check: {problem}");
            return 2;
        }
        var o = l.Loaded.Options!;
        // Not errors (the daemon starts without them), but functions need them: say so now rather than at fn create.
        foreach (var (key, path) in (ReadOnlySpan<(string, string?)>)[(nameof(o.FunctionKernel), o.FunctionKernel), (nameof(o.FunctionRootfs), o.FunctionRootfs)])
        {
            if (path is null) Console.Error.WriteLine($"firesharp config check: note: {key} is not set: fn create must name --{(key == nameof(o.FunctionKernel) ? "kernel" : "rootfs")}");
            else if (!File.Exists(path)) Console.Error.WriteLine($"firesharp config check: warning: {key}='{path}' does not exist");
            else if (o.PathPolicy().Locate(path) is null) Console.Error.WriteLine($"firesharp config check: warning: {key}='{path}' is outside AllowedPathRoots ({o.PathPolicy().Describe()})");
        }
        string source = l.Root.Providers.OfType<Microsoft.Extensions.Configuration.Json.JsonConfigurationProvider>().Select(SettingKeys.Describe).FirstOrDefault() ?? "no file";
        Console.WriteLine($"configuration OK ({source}{(File.Exists(file ?? DaemonOptions.DefaultConfigFile) ? "" : ": absent, defaults used")})");
        return 0;
    }

    private static int RunShow(string? file, string output, string[] settings)
    {
        if (Load("show", file, settings, out int exit) is not { } l) return exit;
        if (!l.Loaded.Ok)
        {
            foreach (var problem in l.Loaded.Problems) Console.Error.WriteLine($"firesharp config show: {problem}");
            return 2;
        }
        var rows = DaemonConfiguration.Sources(l.Root, l.Loaded.Settings!);
        if (output == "json")
        {
            using var stream = Console.OpenStandardOutput();
            using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteStartArray("items");
                foreach (var r in rows)
                {
                    json.WriteStartObject();
                    json.WriteString("key", r.Key.Name);
                    if (r.Value is null) json.WriteNull("value"); else json.WriteString("value", r.Value);
                    json.WriteString("source", r.Source);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            stream.Write("\n"u8);
            return 0;
        }
        int keyWidth = rows.Max(r => r.Key.Name.Length), valueWidth = Math.Max(5, rows.Max(r => (r.Value ?? "-").Length));
        Console.WriteLine($"{"KEY".PadRight(keyWidth)}  {"VALUE".PadRight(valueWidth)}  SOURCE");
        foreach (var r in rows)
            Console.WriteLine($"{r.Key.Name.PadRight(keyWidth)}  {(r.Value ?? "-").PadRight(valueWidth)}  {r.Source}");
        return 0;
    }
}
