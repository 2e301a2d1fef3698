using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace FireSharp.Daemon.Configuration;

/// <summary>What loading the configuration gave: the options, or every problem found (one line each, naming its key).</summary>
public sealed record LoadedConfiguration(DaemonSettings? Settings, DaemonOptions? Options, IReadOnlyList<string> Problems)
{
    public bool Ok => Options is not null && Problems.Count == 0;
}

/// <summary>Where a key's effective value comes from: "default", "file /etc/firesharp/config.json", "environment (FIRESHARP_MAXVMS)"...</summary>
public sealed record SettingSource(SettingKey Key, string? Value, string Source);

/// <summary>
/// The daemon's configuration through the Options pattern: the sources (the JSON file, then FIRESHARP_* variables,
/// then --Key=value arguments, later ones winning) are checked for unknown keys and for values of the wrong type,
/// bound to <see cref="DaemonSettings"/> by the configuration-binding source generator, and validated by
/// <see cref="DaemonSettingsRules"/> as the options' start-up validation (<c>ValidateOnStart</c>). Every problem is
/// reported, not only the first. <c>firesharp serve</c>, <c>firesharp config check</c> and <c>config show</c> all
/// load through here.
/// </summary>
public static class DaemonConfiguration
{
    /// <summary>The sources in their order. A <paramref name="configFile"/> that was named must exist; the default one may not.</summary>
    public static IConfigurationRoot Build(string? configFile, IEnumerable<string> arguments)
    {
        if (configFile is not null && !File.Exists(configFile))
            throw new FileNotFoundException($"config file {configFile} does not exist", configFile);
        return new ConfigurationBuilder()
            .AddJsonFile(Path.GetFullPath(configFile ?? DaemonOptions.DefaultConfigFile), optional: configFile is null)
            .AddEnvironmentVariables(SettingKeys.EnvironmentPrefix)
            .AddCommandLine([.. arguments])
            .Build();
    }

    /// <summary>Loads and validates; never throws for a bad value (it is among the problems).</summary>
    public static LoadedConfiguration Load(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var problems = configuration is IConfigurationRoot root ? SettingKeys.Unknown(root) : [];
        var values = Normalize(configuration, problems);
        if (problems.Count > 0) return new(null, null, problems);

        var services = new ServiceCollection();
        services.AddOptions<DaemonSettings>()
            .Bind(new ConfigurationBuilder().AddInMemoryCollection(values).Build())
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<DaemonSettings>, DaemonSettingsRules>();
        using var provider = services.BuildServiceProvider();
        try
        {
            // What a host does before it starts: every ValidateOnStart options type is built and validated.
            provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(CancellationToken.None).GetAwaiter().GetResult();
            var settings = provider.GetRequiredService<IOptions<DaemonSettings>>().Value;
            var conversion = new List<string>();
            var options = settings.ToOptions(conversion);
            return conversion.Count == 0 ? new(settings, options, []) : new(null, null, conversion);
        }
        catch (OptionsValidationException e)
        {
            return new(null, null, [.. e.Failures]);
        }
        catch (InvalidOperationException e)
        {
            // The binder's own conversion failure (Normalize checks the types first, so this is a backstop).
            return new(null, null, [e.Message]);
        }
    }

    /// <summary>Loads <paramref name="configuration"/>; an <see cref="ArgumentException"/> lists every problem, one a line.</summary>
    public static DaemonOptions LoadOrThrow(IConfiguration configuration)
    {
        var loaded = Load(configuration);
        return loaded.Ok ? loaded.Options! : throw new ArgumentException(string.Join('\n', loaded.Problems.Select(p => "configuration " + p)));
    }

    /// <summary>Each key's effective value (the options' own, or the default) and the source it came from.</summary>
    public static IReadOnlyList<SettingSource> Sources(IConfigurationRoot root, DaemonSettings settings)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(settings);
        var list = new List<SettingSource>();
        foreach (var key in SettingKeys.All)
        {
            string source = "default";
            foreach (var provider in root.Providers.Reverse())
            {
                bool has = provider.TryGet(key.Name, out var v) && !string.IsNullOrEmpty(v) || provider.GetChildKeys([], key.Name).Any();
                if (!has) continue;
                source = provider is Microsoft.Extensions.Configuration.Json.JsonConfigurationProvider
                    ? SettingKeys.Describe(provider)
                    : $"{SettingKeys.Describe(provider)} ({SettingKeys.Spell(provider, key.Name)})";
                break;
            }
            list.Add(new SettingSource(key, DaemonSettings.Show(SettingKeys.ValueOf(settings, key)), source));
        }
        return list;
    }

    /// <summary>
    /// The known keys' values as the binder is to see them: unset and empty values left out (the key keeps its
    /// default), a list given as one comma-separated string split into entries, and a value that is not of its
    /// key's type reported here, naming the key, rather than as the binder's exception.
    /// </summary>
    private static Dictionary<string, string?> Normalize(IConfiguration configuration, List<string> problems)
    {
        var values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var key in SettingKeys.All)
        {
            var section = configuration.GetSection(key.Name);
            if (key.IsList)
            {
                var children = section.GetChildren().Select(c => c.Value).OfType<string>().ToList();
                var items = children.Count > 0 ? children : (section.Value ?? "").Split(',').ToList();
                int i = 0;
                foreach (var item in items.Select(s => s.Trim()).Where(s => s.Length > 0))
                    values[$"{key.Name}:{i++}"] = item;
                continue;
            }
            if (string.IsNullOrEmpty(section.Value)) continue;
            string value = section.Value;
            if (TypeProblem(Nullable.GetUnderlyingType(key.Type) ?? key.Type, value) is { } why)
                problems.Add(DaemonOptions.Bad(key.Name, value, why));
            else
                values[key.Name] = value;
        }
        return values;
    }

    private static string? TypeProblem(Type type, string value)
    {
        var inv = CultureInfo.InvariantCulture;
        const NumberStyles whole = NumberStyles.AllowLeadingWhite | NumberStyles.AllowTrailingWhite | NumberStyles.AllowLeadingSign;
        const NumberStyles natural = NumberStyles.AllowLeadingWhite | NumberStyles.AllowTrailingWhite;
        return type switch
        {
            _ when type == typeof(bool) => bool.TryParse(value, out _) ? null : "must be true or false",
            _ when type == typeof(int) => int.TryParse(value, whole, inv, out _) ? null : "must be a whole number",
            _ when type == typeof(long) => long.TryParse(value, whole, inv, out _) ? null : "must be a whole number",
            _ when type == typeof(uint) => uint.TryParse(value, natural, inv, out _) ? null : "must be a whole number from 0 to 4294967295",
            _ when type == typeof(ulong) => ulong.TryParse(value, natural, inv, out _) ? null : "must be a whole number of 0 or more",
            _ when type == typeof(double) => double.TryParse(value, NumberStyles.Float, inv, out _) ? null : "must be a number (such as 1.5)",
            _ => null,
        };
    }
}
