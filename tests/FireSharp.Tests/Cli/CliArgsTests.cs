using FireSharp.Cli.Args;

namespace FireSharp.Tests.Cli;

/// <summary>The one size, --drive and --net grammar of the command line.</summary>
public class CliArgsTests
{
    [Theory]
    [InlineData("512M", 512)]
    [InlineData("512m", 512)]
    [InlineData("1G", 1024)]
    [InlineData("1GiB", 1024)]
    [InlineData("1gb", 1024)]
    [InlineData("1.5G", 1536)]
    [InlineData("1024", 1024)]
    [InlineData("2097152K", 2048)]
    public void Memory_sizes_take_units_and_default_to_MiB(string text, long mib) => Assert.Equal(mib, Size.ParseMib(text, "--mem"));

    [Theory]
    [InlineData("1X")]
    [InlineData("G")]
    [InlineData("-1G")]
    [InlineData("0")]
    [InlineData("1.5")]
    [InlineData("100K")]
    [InlineData("")]
    public void Bad_sizes_are_usage_errors_naming_the_flag(string text)
    {
        var e = Assert.Throws<ArgException>(() => Size.ParseMib(text, "--mem"));
        Assert.StartsWith("--mem ", e.Message);
        Assert.NotNull(e.Hint);
    }

    [Fact]
    public void Rates_are_bytes_by_default() => Assert.Equal(64L << 20, Size.Parse("64M", 1, "bps="));

    [Fact]
    public void Drive_grammar_with_keys_in_any_order()
    {
        var d = DriveArg.Parse("/img/a.ext4,ro,id=data,bps=64M,iops=1000,root,serial=S1");
        Assert.Equal(new DriveArg { Path = "/img/a.ext4", ReadOnly = true, Id = "data", Bps = 64L << 20, Iops = 1000, Root = true, Serial = "S1" }, d);
        Assert.Equal(new DriveArg { Path = "/img/b", Id = "x" }, DriveArg.Parse("id=x,path=/img/b"));
    }

    [Fact]
    public void The_older_drive_spellings_still_parse()
    {
        // run's PATH[:ro][:root][:id=SERIAL] (id= was the GET_ID serial) and snapshot restore's ID=PATH.
        Assert.Equal(new DriveArg { Path = "/img/a", ReadOnly = true, Root = true, Serial = "S" }, DriveArg.Parse("/img/a:ro:root:id=S"));
        Assert.Equal(new DriveArg { Id = "rootfs", Path = "/img/c" }, DriveArg.Parse("rootfs=/img/c"));
    }

    [Theory]
    [InlineData("ro")]
    [InlineData("/a,ro,rw")]
    [InlineData("/a,size=1")]
    [InlineData("/a,id=")]
    [InlineData("/a,bps=fast")]
    [InlineData("disk.img:ro:rw")]
    public void Bad_drives_are_usage_errors_with_the_grammar_as_hint(string text)
    {
        var e = Assert.Throws<ArgException>(() => DriveArg.Parse(text));
        Assert.Contains("--drive", e.Message);
        // The hint is the grammar, or for a bad amount the size grammar.
        Assert.Contains(text.Contains("bps=", StringComparison.Ordinal) ? Size.Grammar : DriveArg.Grammar, e.Hint);
    }

    [Fact]
    public void A_command_refuses_the_drive_keys_it_does_not_take()
    {
        Assert.Throws<ArgException>(() => DriveArg.Parse("/a,serial=x").Only("--drive", "vm create", serial: false));
        Assert.Throws<ArgException>(() => DriveArg.Parse("id=a,path=/a,ro").Only("--drive", "snapshot restore", flags: false));
        Assert.Throws<ArgException>(() => DriveArg.Parse("/a").Only("--drive", "snapshot restore", needsId: true));
    }

    [Fact]
    public void Net_grammar_with_keys_in_any_order_and_the_older_bare_mac()
    {
        var n = NetArg.Parse("tap0,id=eth0,mac=02:00:00:00:00:01,ip=10.0.0.2/24,gw=10.0.0.1,rx-bps=1M,bps=2M");
        Assert.Equal("tap0", n.Tap);
        Assert.Equal("eth0", n.Id);
        Assert.Equal("02:00:00:00:00:01", n.Mac);
        Assert.Equal(1L << 20, n.Rate("rx-bps", "bps"));
        Assert.Equal(2L << 20, n.Rate("tx-bps", "bps"));
        Assert.True(NetArg.Parse("id=a,tap=auto").Auto);
        Assert.True(NetArg.Parse("auto").Auto);
        Assert.Equal("02:00:00:00:00:09", NetArg.Parse("tap1,02:00:00:00:00:09").Mac);
    }

    [Theory]
    [InlineData("id=eth0")]
    [InlineData("tap0,gw=10.0.0.1")]
    [InlineData("tap0,colour=blue")]
    [InlineData("tap0,bps=1M,bps=2M")]
    public void Bad_nets_are_usage_errors(string text) => Assert.Throws<ArgException>(() => NetArg.Parse(text));
}
