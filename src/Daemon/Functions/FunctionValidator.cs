using System.Text;
using FireSharp.Proto.V1;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// Lambda's limits, checked before anything is created. Each failure is a <see cref="VmApiException"/>
/// naming the field by its proto path (for example <c>spec.memory_mib</c>).
/// </summary>
public static class FunctionValidator
{
    public const int MaxNameLength = 64;
    public const int MinMemoryMib = 128;
    public const int MaxMemoryMib = 10240;
    public const int DefaultMemoryMib = 128;
    /// <summary>Lambda gives one full vCPU per 1769 MB.</summary>
    public const int MibPerVcpu = 1769;
    public const int MinTimeoutSeconds = 1;
    public const int MaxTimeoutSeconds = 900;
    public const int DefaultTimeoutSeconds = 3;
    public const int MaxLayers = 5;
    /// <summary>Lambda's synchronous payload limit (6 MB), request and response.</summary>
    public const int MaxPayloadBytes = 6 * 1024 * 1024;
    /// <summary>Lambda's limit on the environment (keys and values together).</summary>
    public const int MaxEnvironmentBytes = 4 * 1024;
    public const int MaxHandlerLength = 128;

    /// <summary>1..64 of [a-zA-Z0-9_-].</summary>
    public static void ValidateName(string? name, string field)
    {
        if (string.IsNullOrEmpty(name)) throw VmApiException.Invalid(field, "is required");
        if (name.Length > MaxNameLength) throw VmApiException.Invalid(field, $"is {name.Length} characters; at most {MaxNameLength}");
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
                throw VmApiException.Invalid(field, $"'{Printable(name)}' may contain only letters, digits, '-' and '_'");
    }

    /// <summary>Memory, 0 meaning the default; returns the effective value.</summary>
    public static int ValidateMemory(int memoryMib, string field)
    {
        if (memoryMib == 0) return DefaultMemoryMib;
        if (memoryMib is < MinMemoryMib or > MaxMemoryMib)
            throw VmApiException.Invalid(field, $"is {memoryMib}; must be {MinMemoryMib} to {MaxMemoryMib} MiB");
        return memoryMib;
    }

    /// <summary>vCPUs, 0 meaning in proportion to memory (Lambda's 1 per 1769 MiB, at least 1, at most the host's).</summary>
    public static int ValidateVcpus(int vcpus, int memoryMib, HostLimits host, string field)
    {
        int hostMax = Math.Min(host.MaxVcpus, Math.Max(1, Environment.ProcessorCount));
        if (vcpus == 0) return Math.Clamp((memoryMib + MibPerVcpu - 1) / MibPerVcpu, 1, hostMax);
        if (vcpus < 0) throw VmApiException.Invalid(field, $"is {vcpus}; must be at least 1 (or 0 for the memory-based default)");
        if (vcpus > hostMax) throw VmApiException.Exhausted(field, $"is {vcpus}; this host has {hostMax}");
        return vcpus;
    }

    public static int ValidateTimeout(int seconds, string field)
    {
        if (seconds == 0) return DefaultTimeoutSeconds;
        if (seconds is < MinTimeoutSeconds or > MaxTimeoutSeconds)
            throw VmApiException.Invalid(field, $"is {seconds}; must be {MinTimeoutSeconds} to {MaxTimeoutSeconds} seconds");
        return seconds;
    }

    public static void ValidateHandler(string? handler, string field)
    {
        if (string.IsNullOrEmpty(handler)) throw VmApiException.Invalid(field, "is required");
        if (handler.Length > MaxHandlerLength) throw VmApiException.Invalid(field, $"is {handler.Length} characters; at most {MaxHandlerLength}");
        foreach (char c in handler)
            if (c is < '!' or > '~') throw VmApiException.Invalid(field, $"'{Printable(handler)}' must be printable ASCII without spaces");
    }

    public static void ValidateLayers(IReadOnlyList<string> layers, string field)
    {
        if (layers.Count > MaxLayers) throw VmApiException.Invalid(field, $"has {layers.Count} layers; at most {MaxLayers}");
        for (int i = 0; i < layers.Count; i++)
            SpecValidator.ValidateFile(layers[i], $"{field}[{i}]", required: true);
    }

    public static void ValidateEnvironment(IReadOnlyDictionary<string, string> environment, string field)
    {
        int bytes = 0;
        foreach (var (key, value) in environment)
        {
            if (key.Length == 0 || !(char.IsAsciiLetter(key[0]) || key[0] == '_') || !key.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
                throw VmApiException.Invalid($"{field}[\"{Printable(key)}\"]", "a key must match [a-zA-Z_][a-zA-Z0-9_]*");
            if (value.Contains('\0')) throw VmApiException.Invalid($"{field}[\"{key}\"]", "contains a NUL character");
            bytes += Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(value);
        }
        if (bytes > MaxEnvironmentBytes) throw VmApiException.Invalid(field, $"is {bytes} bytes; at most {MaxEnvironmentBytes}");
    }

    /// <summary>The code source: exactly one of an existing ext4 image or an existing directory.</summary>
    public static void ValidateCode(FunctionCode? code, string field)
    {
        switch (code?.SourceCase ?? FunctionCode.SourceOneofCase.None)
        {
            case FunctionCode.SourceOneofCase.ImagePath:
                SpecValidator.ValidateFile(code!.ImagePath, field + ".image_path", required: true);
                break;
            case FunctionCode.SourceOneofCase.Directory:
                string dir = code!.Directory;
                if (dir.Length == 0) throw VmApiException.Invalid(field + ".directory", "is required");
                if (dir.Contains('\0') || !Path.IsPathFullyQualified(dir)) throw VmApiException.Invalid(field + ".directory", $"'{Printable(dir)}' is not an absolute path");
                if (!Directory.Exists(dir)) throw VmApiException.Invalid(field + ".directory", $"'{dir}' is not a directory (or is not readable by the daemon)");
                break;
            default:
                throw VmApiException.Invalid(field, "is required: an ext4 image path or a directory");
        }
    }

    /// <summary>The payload must fit Lambda's 6 MB: beyond it, ResourceExhausted like RequestTooLargeException (413).</summary>
    public static void ValidatePayload(int bytes, string field)
    {
        if (bytes > MaxPayloadBytes)
            throw VmApiException.Exhausted(field, $"is {bytes} bytes; at most {MaxPayloadBytes} (RequestTooLargeException)");
    }

    private static string Printable(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s.Length <= 80 ? s : s[..80])
            sb.Append(c is < ' ' or > '~' ? $"\\u{(int)c:x4}" : c.ToString());
        if (s.Length > 80) sb.Append("...");
        return sb.ToString();
    }
}
