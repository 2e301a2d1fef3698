using Microsoft.Extensions.Options;

namespace FireSharp.Daemon.Configuration;

/// <summary>The data annotations on <see cref="DaemonSettings"/> (ranges), checked by source-generated code (no reflection).</summary>
[OptionsValidator]
public sealed partial class DaemonSettingsAnnotations : IValidateOptions<DaemonSettings>;

/// <summary>
/// The settings' start-up validation: the annotations (<see cref="DaemonSettingsAnnotations"/>), then whether each
/// value converts to its option (<see cref="DaemonSettings.ToOptions"/>), then the rules between options
/// (<see cref="DaemonOptions.Problems"/>). Each problem is one line that names its key; a key already reported by
/// an earlier stage is not reported again.
/// </summary>
public sealed class DaemonSettingsRules : IValidateOptions<DaemonSettings>
{
    private static readonly DaemonSettingsAnnotations Annotations = new();

    public ValidateOptionsResult Validate(string? name, DaemonSettings options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var problems = new List<string>();
        var annotations = Annotations.Validate(name, options);
        if (annotations.Failed)
            foreach (var failure in annotations.Failures ?? [])
                problems.Add(Reword(failure, options));
        foreach (var p in options.ToOptions(problems).Problems())
            if (!problems.Any(q => KeyOf(q) == KeyOf(p))) problems.Add(p);
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }

    /// <summary>
    /// The generated validator's "MaxVms: The field MaxVms must be between 1 and 1000000." as the daemon's other
    /// lines: "MaxVms='0' must be 1 to 1000000".
    /// </summary>
    internal static string Reword(string failure, DaemonSettings settings)
    {
        int colon = failure.IndexOf(": ", StringComparison.Ordinal);
        if (colon <= 0 || SettingKeys.Find(failure[..colon]) is not { } key) return failure;
        string why = failure[(colon + 2)..].TrimEnd('.');
        string field = $"The field {key.Name} ";
        if (why.StartsWith(field, StringComparison.Ordinal)) why = why[field.Length..];
        why = System.Text.RegularExpressions.Regex.Replace(why, @"^must be between (\S+) and (\S+)$", "must be $1 to $2");
        return DaemonOptions.Bad(key.Name, DaemonSettings.Show(SettingKeys.ValueOf(settings, key)) ?? "", why);
    }

    /// <summary>The key a problem line starts with ("MaxVms='0' ..." → MaxVms).</summary>
    private static string KeyOf(string problem) => problem.Split('=', 2)[0];
}
