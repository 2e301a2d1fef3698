using System.Text.RegularExpressions;

namespace FireSharp.Pool;

/// <summary>What makes a <see cref="FunctionDefinition"/> acceptable to the pool. The limits are Lambda's.</summary>
internal static partial class FunctionDefinitionRules
{
    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    /// <exception cref="InvalidFunctionRequestException">naming the first field that is wrong.</exception>
    public static void Validate(FunctionDefinition d)
    {
        if (string.IsNullOrEmpty(d.Name) || !NamePattern().IsMatch(d.Name))
            throw new InvalidFunctionRequestException("Name", "1 to 64 letters, digits, '-' or '_'");
        if (d.MemoryMib is < 128 or > 10240)
            throw new InvalidFunctionRequestException("MemoryMib", "must be within [128, 10240]");
        if (d.Vcpus is < 1 or > 32)
            throw new InvalidFunctionRequestException("Vcpus", "must be within [1, 32]");
        if (d.Timeout <= TimeSpan.Zero || d.Timeout > TimeSpan.FromMinutes(15))
            throw new InvalidFunctionRequestException("Timeout", "must be within (0, 15 min]");
        if (d.LayerPaths.Count > 5)
            throw new InvalidFunctionRequestException("LayerPaths", "at most 5 layers");
        if (string.IsNullOrWhiteSpace(d.Handler)) throw new InvalidFunctionRequestException("Handler", "required");
        if (string.IsNullOrWhiteSpace(d.KernelPath)) throw new InvalidFunctionRequestException("KernelPath", "required");
        if (string.IsNullOrWhiteSpace(d.RootfsPath)) throw new InvalidFunctionRequestException("RootfsPath", "required");
        if (string.IsNullOrWhiteSpace(d.CodeImagePath)) throw new InvalidFunctionRequestException("CodeImagePath", "required");
        if (d.LayerPaths.Any(string.IsNullOrWhiteSpace)) throw new InvalidFunctionRequestException("LayerPaths", "empty path");
    }
}
