using System.Globalization;

namespace FireSharp.Cli.Args;

/// <summary>
/// The one size grammar of the command line: a number with an optional unit, <c>512M</c>, <c>1G</c>, <c>1GiB</c>,
/// <c>1.5G</c>, <c>4096K</c>, <c>1024</c>. Units are binary whatever their spelling (K, KB, KiB = 1024; M, MB, MiB;
/// G, GB, GiB; T, TB, TiB; B = bytes), any case; a bare number is in the caller's default unit (MiB for memory,
/// bytes for a rate). Used for <c>--mem</c> and the <c>bps=</c>/<c>iops=</c> keys of <c>--drive</c> and <c>--net</c>.
/// </summary>
public static class Size
{
    public const long KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;

    public const string Grammar = "a number with an optional unit: 512M, 1G, 1GiB, 4096K (binary: 1K = 1024)";

    /// <summary>Parses <paramref name="text"/> into bytes (or units of <paramref name="defaultUnit"/> for a bare number); throws <see cref="ArgException"/> naming <paramref name="what"/>.</summary>
    public static long Parse(string text, long defaultUnit, string what)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        int end = t.Length;
        while (end > 0 && char.IsAsciiLetter(t[end - 1])) end--;
        string number = t[..end], unit = t[end..].ToLowerInvariant();
        long multiplier = unit switch
        {
            "" => defaultUnit,
            "b" => 1,
            "k" or "kb" or "kib" => KiB,
            "m" or "mb" or "mib" => MiB,
            "g" or "gb" or "gib" => GiB,
            "t" or "tb" or "tib" => TiB,
            _ => 0,
        };
        if (multiplier == 0 || number.Length == 0
            || !decimal.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal n))
            throw new ArgException($"{what} {text}: not a size", $"sizes are {Grammar}");
        decimal bytes = n * multiplier;
        if (bytes <= 0 || bytes > long.MaxValue || bytes != decimal.Truncate(bytes))
            throw new ArgException($"{what} {text}: must be a positive whole number of bytes", $"sizes are {Grammar}");
        return (long)bytes;
    }

    /// <summary>A memory size in whole MiB (a bare number is MiB).</summary>
    public static long ParseMib(string text, string what)
    {
        long bytes = Parse(text, MiB, what);
        if (bytes % MiB != 0) throw new ArgException($"{what} {text}: must be a whole number of MiB", "e.g. 512M or 1G");
        return bytes / MiB;
    }
}
