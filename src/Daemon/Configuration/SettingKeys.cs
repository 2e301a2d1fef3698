using System.Reflection;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.CommandLine;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.FileProviders;

namespace FireSharp.Daemon.Configuration;

/// <summary>One configuration key: its name as <see cref="DaemonSettings"/> spells it and its type.</summary>
public sealed record SettingKey(string Name, Type Type)
{
    /// <summary>A list (a JSON array, or one comma-separated string).</summary>
    public bool IsList => Type == typeof(List<string>);
}

/// <summary>
/// The keys <see cref="DaemonSettings"/> knows, and the check that every key a configuration source sets is one of
/// them: a typo (<c>--MaxVm=5</c>) is an error that suggests the nearest key by edit distance, not a setting silently
/// ignored.
/// </summary>
public static class SettingKeys
{
    /// <summary>The prefix of the daemon's environment variables (FIRESHARP_MAXVMS sets MaxVms).</summary>
    public const string EnvironmentPrefix = "FIRESHARP_";

    /// <summary>
    /// FIRESHARP_* variables that are not daemon settings: the CLI's, the build's and the tests'. They are ignored, as
    /// is any other variable that is not near a setting's name (it belongs to some other tool); one that is near one
    /// (FIRESHARP_MAXVM) is reported as a typo.
    /// </summary>
    public static readonly IReadOnlySet<string> OtherEnvironmentVariables = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        "CACHE", "GUEST_DIR", "BIN", "WORKER_BIN", "AGENT_BIN", "REQUIRE_KVM", "TEST_FILTER", "SAMPLE_RIP_MS",
        "PVM_UNMASK", "PVM_GLIBC_TUNABLES", "PVM_CLEARCPUID", "FN_ROOTFS", "HOST", "OUTPUT", "CONFIG",
    };

    /// <summary>Every key, in <see cref="DaemonSettings"/>' order.</summary>
    public static IReadOnlyList<SettingKey> All { get; } =
        [.. typeof(DaemonSettings).GetProperties(BindingFlags.Public | BindingFlags.Instance).Select(p => new SettingKey(p.Name, p.PropertyType))];

    private static readonly Dictionary<string, SettingKey> ByName = All.ToDictionary(k => k.Name, StringComparer.OrdinalIgnoreCase);

    public static SettingKey? Find(string name) => ByName.GetValueOrDefault(name);

    /// <summary>The value of a key in <paramref name="settings"/>.</summary>
    public static object? ValueOf(DaemonSettings settings, SettingKey key) =>
        typeof(DaemonSettings).GetProperty(key.Name, BindingFlags.Public | BindingFlags.Instance)!.GetValue(settings);

    /// <summary>The nearest key to <paramref name="name"/> if it is near enough to be a typo of it.</summary>
    public static string? Suggest(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var key in All)
        {
            int d = EditDistance(name.ToUpperInvariant(), key.Name.ToUpperInvariant());
            if (d < bestDistance) (best, bestDistance) = (key.Name, d);
        }
        // One edit in four characters, at least two: MaxVm, LogLvel and Soket are typos; Cache is not a setting.
        return bestDistance <= Math.Max(2, name.Length / 4) ? best : null;
    }

    /// <summary>Levenshtein distance (insertions, deletions and substitutions; an adjacent swap counts as one).</summary>
    public static int EditDistance(string a, string b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }

    /// <summary>
    /// One line per key that a source of <paramref name="root"/> sets and no setting has: "unknown setting MaxVm (did
    /// you mean MaxVms?)", spelled as that source spells keys (--MaxVm, FIRESHARP_MAXVM, or MaxVm in FILE).
    /// </summary>
    public static List<string> Unknown(IConfigurationRoot root)
    {
        ArgumentNullException.ThrowIfNull(root);
        var problems = new List<string>();
        foreach (var provider in root.Providers)
        {
            bool env = provider is EnvironmentVariablesConfigurationProvider;
            foreach (var top in provider.GetChildKeys([], null).Distinct(StringComparer.OrdinalIgnoreCase))
            {
                if (Find(top) is { } key)
                {
                    // A list's children are its entries (0, 1, ...); a single value has none.
                    var children = provider.GetChildKeys([], top).Distinct(StringComparer.OrdinalIgnoreCase).ToList();
                    if (children.Count > 0 && !(key.IsList && children.All(c => int.TryParse(c, out _))))
                        problems.Add($"{Spell(provider, top)}: {key.Name} is {(key.IsList ? "a list" : "a single value")}, not a section ({Describe(provider)})");
                    continue;
                }
                string? near = Suggest(top);
                if (env && (OtherEnvironmentVariables.Contains(top) || near is null)) continue;
                string hint = near is null ? "" : $" (did you mean {Spell(provider, near)}?)";
                string where = provider is CommandLineConfigurationProvider or EnvironmentVariablesConfigurationProvider ? "" : $" in {Describe(provider)}";
                problems.Add($"unknown setting {Spell(provider, top)}{where}{hint}");
            }
        }
        return problems;
    }

    /// <summary>A key as the provider's users write it: --Key, FIRESHARP_KEY, or Key.</summary>
    public static string Spell(IConfigurationProvider provider, string key) => provider switch
    {
        CommandLineConfigurationProvider => "--" + key,
        EnvironmentVariablesConfigurationProvider => EnvironmentPrefix + key.ToUpperInvariant(),
        _ => key,
    };

    /// <summary>Where a provider's values come from: "file /etc/firesharp/config.json", "environment", "command line".</summary>
    public static string Describe(IConfigurationProvider provider) => provider switch
    {
        JsonConfigurationProvider json => "file " + (json.Source.FileProvider is PhysicalFileProvider physical
            ? Path.Combine(physical.Root, json.Source.Path ?? "") : json.Source.Path),
        EnvironmentVariablesConfigurationProvider => "environment",
        CommandLineConfigurationProvider => "command line",
        _ => "settings",
    };
}
