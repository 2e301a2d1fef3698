using FireSharp.Boot;

namespace FireSharp.Tests.Boot;

/// <summary>
/// The kernel command line FireSharp adds on PVM hosts (docs/pvm.md): in particular GLIBC_TUNABLES, which
/// keeps the guest's glibc off AVX/AVX2/AVX-512 because a noxsave guest kernel does not context-switch
/// that register state while PVM lets guest user mode use it.
/// </summary>
public class PvmQuirksTests
{
    private static string Cmdline(IReadOnlyList<(string Parameter, string Why)> parameters) =>
        string.Join(' ', parameters.Select(p => p.Parameter));

    [Fact]
    public void Default_parameters_include_noxsave_clearcpuid_and_the_glibc_tunables()
    {
        var parameters = PvmQuirks.BuildLinuxParameters(null, null);
        var names = parameters.Select(p => p.Parameter).ToList();

        Assert.Contains("noxsave", names);
        Assert.Contains("clearcpuid=308,151", names);
        Assert.Equal("GLIBC_TUNABLES=" + PvmQuirks.GlibcTunables, names[^1]);
        Assert.All(parameters, p => Assert.False(string.IsNullOrWhiteSpace(p.Why)));
    }

    [Theory]
    [InlineData("-AVX")]
    [InlineData("-AVX2")]
    [InlineData("-AVX512F")]
    [InlineData("-AVX512VL")]
    [InlineData("-AVX_Fast_Unaligned_Load")]
    public void Glibc_tunables_turn_off_each_avx_level_glibc_would_pick(string item)
    {
        Assert.StartsWith("glibc.cpu.hwcaps=", PvmQuirks.GlibcTunables);
        Assert.Contains(item, PvmQuirks.GlibcTunables["glibc.cpu.hwcaps=".Length..].Split(','));
    }

    [Fact]
    public void Glibc_tunables_parameter_reaches_init_as_an_environment_variable()
    {
        string parameter = PvmQuirks.BuildLinuxParameters(null, null).Single(p => p.Parameter.StartsWith("GLIBC_TUNABLES=", StringComparison.Ordinal)).Parameter;
        int eq = parameter.IndexOf('=');
        // Linux gives init NAME=VALUE only when NAME has no '.' (else it is a module parameter), and the
        // command line splits at spaces.
        Assert.DoesNotContain('.', parameter[..eq]);
        Assert.DoesNotContain(' ', parameter);
        Assert.DoesNotContain('"', parameter);
    }

    [Fact]
    public void Knobs_replace_or_drop_the_clearcpuid_list_and_the_tunables()
    {
        Assert.Equal("noxsave clearcpuid=308,151,288 tsc=reliable no_timer_check GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2",
            Cmdline(PvmQuirks.BuildLinuxParameters("308,151,288", "glibc.cpu.hwcaps=-AVX2")));
        Assert.Equal("noxsave tsc=reliable no_timer_check",
            Cmdline(PvmQuirks.BuildLinuxParameters("", "")));
    }
}
