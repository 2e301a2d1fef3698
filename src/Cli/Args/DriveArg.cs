namespace FireSharp.Cli.Args;

/// <summary>
/// The one <c>--drive</c> grammar of <c>run</c>, <c>vm create</c> and <c>snapshot restore</c>:
/// <code>[path=]PATH[,id=ID][,ro|,rw][,root][,serial=SERIAL][,bps=N][,iops=N]</code>
/// comma-separated, in any order; the first item without '=' is the image path. <c>id</c> is the drive's id in the VM
/// (default <c>drive</c>N), <c>serial</c> what the guest reads from GET_ID (<c>run</c> only), <c>bps</c>/<c>iops</c>
/// a rate limit (<see cref="Size"/>). <c>snapshot restore</c> takes <c>id=ID,path=PATH</c>: that drive's image for
/// the new VM. The older spellings still parse for a release: <c>run</c>'s <c>PATH[:ro][:root][:id=SERIAL]</c> and
/// <c>snapshot restore</c>'s <c>ID=PATH</c>.
/// </summary>
public sealed record DriveArg
{
    public const string Grammar = "[path=]PATH[,id=ID][,ro|,rw][,root][,serial=SERIAL][,bps=N][,iops=N]";

    public string? Path { get; init; }
    public string? Id { get; init; }
    public bool ReadOnly { get; init; }
    public bool Root { get; init; }
    public string? Serial { get; init; }
    public long? Bps { get; init; }
    public long? Iops { get; init; }

    private static readonly string[] Keys = ["path", "id", "serial", "bps", "iops"];
    private static readonly string[] LegacySuffixes = [":ro", ":rw", ":root"];

    public static DriveArg Parse(string text, string what = "--drive")
    {
        ArgumentNullException.ThrowIfNull(text);
        if (IsLegacyColonForm(text)) return ParseLegacyColonForm(text, what);
        var parts = text.Split(',');
        // snapshot restore's old ID=PATH.
        if (parts.Length == 1 && parts[0].IndexOf('=') is > 0 and var eq && !Keys.Contains(parts[0][..eq]))
            return new DriveArg { Id = parts[0][..eq], Path = parts[0][(eq + 1)..] };
        var d = new DriveArg();
        bool? readOnly = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < parts.Length; i++)
        {
            string p = parts[i];
            int at = p.IndexOf('=');
            string key = at < 0 ? p : p[..at];
            string value = at < 0 ? "" : p[(at + 1)..];
            if (at < 0 && key is "ro" or "rw" or "root")
            {
                if (!seen.Add(key is "rw" ? "ro" : key)) throw Bad(what, text, $"'{key}' given twice");
                if (key == "root") d = d with { Root = true };
                else readOnly = key == "ro";
                continue;
            }
            if (at < 0)
            {
                if (i != 0) throw Bad(what, text, $"'{p}' is not a key=value or ro/rw/root");
                (key, value) = ("path", p);
            }
            if (!seen.Add(key)) throw Bad(what, text, $"{key}= given twice");
            if (value.Length == 0) throw Bad(what, text, $"{key}= has no value");
            d = key switch
            {
                "path" => d with { Path = value },
                "id" => d with { Id = value },
                "serial" => d with { Serial = value },
                "bps" => d with { Bps = Size.Parse(value, 1, $"{what} bps=") },
                "iops" => d with { Iops = Size.Parse(value, 1, $"{what} iops=") },
                _ => throw Bad(what, text, $"unknown key '{key}'"),
            };
        }
        if (d.Path is null) throw Bad(what, text, "no image path");
        return d with { ReadOnly = readOnly ?? false };
    }

    /// <summary>Refuses the keys a command does not take (<c>serial</c> is <c>run</c>'s; restore takes only id and path).</summary>
    public DriveArg Only(string what, string command, bool serial = true, bool flags = true, bool rates = true, bool needsId = false)
    {
        if (!serial && Serial is not null) throw new ArgException($"{what}: serial= is not taken by {command}", $"{what} {Grammar}");
        if (!flags && (ReadOnly || Root)) throw new ArgException($"{what}: ro/root are not taken by {command} (the snapshot has them)", $"{what} id=ID,path=PATH");
        if (!rates && (Bps is not null || Iops is not null)) throw new ArgException($"{what}: bps=/iops= are not taken by {command}", $"{what} id=ID,path=PATH");
        if (needsId && Id is null) throw new ArgException($"{what}: needs id= (the snapshot's drive id)", $"{what} id=ID,path=PATH");
        return this;
    }

    private static bool IsLegacyColonForm(string text) =>
        !text.Contains(',') && !text.StartsWith("path=", StringComparison.Ordinal)
        && (LegacySuffixes.Any(s => text.EndsWith(s, StringComparison.Ordinal)) || text.Contains(":id=", StringComparison.Ordinal)
            || text.Contains(":bps=", StringComparison.Ordinal) || text.Contains(":iops=", StringComparison.Ordinal));

    /// <summary><c>run</c>'s older <c>PATH[:ro|:rw][:root][:id=SERIAL][:bps=N][:iops=N]</c> (its id= was the GET_ID serial).</summary>
    private static DriveArg ParseLegacyColonForm(string text, string what)
    {
        var parts = text.Split(':').ToList();
        var d = new DriveArg();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (parts.Count > 1)
        {
            string last = parts[^1];
            string key = last is "ro" or "rw" ? "ro" : last.Split('=')[0];
            if (key is "ro" or "root" or "id" or "bps" or "iops" && !seen.Add(key)) throw Bad(what, text, $"'{last}' given twice or contradicted");
            if (last is "ro" or "rw") d = d with { ReadOnly = last == "ro" };
            else if (last == "root") d = d with { Root = true };
            else if (last.StartsWith("id=", StringComparison.Ordinal)) d = d with { Serial = last[3..] };
            else if (last.StartsWith("bps=", StringComparison.Ordinal)) d = d with { Bps = Size.Parse(last[4..], 1, $"{what} bps=") };
            else if (last.StartsWith("iops=", StringComparison.Ordinal)) d = d with { Iops = Size.Parse(last[5..], 1, $"{what} iops=") };
            else break;
            parts.RemoveAt(parts.Count - 1);
        }
        string path = string.Join(':', parts);
        if (path.Length == 0) throw Bad(what, text, "no image path");
        return d with { Path = path };
    }

    private static ArgException Bad(string what, string text, string why) => new($"{what} {text}: {why}", $"{what} {Grammar}");
}
