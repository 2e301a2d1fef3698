using FireSharp.Cli;
using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Cli;

/// <summary>
/// <c>vm console</c>'s parts that need no terminal: the detach-key grammar, the input pump (Ctrl-C passes to the
/// guest as 0x03, the detach key ends the session and is not sent), and the terminal calls' refusal of a pipe.
/// </summary>
public sealed class ConsoleCommandTests
{
    [Theory]
    [InlineData("ctrl-]", 0x1d)]
    [InlineData("Ctrl-]", 0x1d)]
    [InlineData("^]", 0x1d)]
    [InlineData("ctrl-a", 0x01)]
    [InlineData("ctrl-P", 0x10)]
    [InlineData("ctrl-@", 0x00)]
    [InlineData("ctrl-_", 0x1f)]
    public void Detach_keys_are_control_bytes(string text, byte key) => Assert.Equal(key, DetachKey.Parse(text));

    [Fact]
    public void None_means_no_detach_key_and_nonsense_is_refused()
    {
        Assert.Null(DetachKey.Parse("none"));
        Assert.Equal("Ctrl-]", DetachKey.Name(0x1d));
        foreach (var bad in new[] { "ctrl-", "ctrl-ab", "x", "ctrl-1", "alt-x", "" })
            Assert.Contains("--detach-key", Assert.Throws<ArgumentException>(() => DetachKey.Parse(bad)).Message);
    }

    private static async Task<(bool Detached, byte[] Sent)> Pump(byte[] typed, byte? key)
    {
        var sent = new MemoryStream();
        bool detached = await ConsoleCommand.PumpInputAsync(new MemoryStream(typed), (data, _) =>
        {
            sent.Write(data.Span);
            return Task.CompletedTask;
        }, key, CancellationToken.None);
        return (detached, sent.ToArray());
    }

    [Fact]
    public async Task Ctrl_c_goes_to_the_guest_and_the_detach_key_ends_the_session()
    {
        var (detached, sent) = await Pump([(byte)'l', (byte)'s', 0x03, (byte)'\r', 0x1d, (byte)'x'], 0x1d);
        Assert.True(detached);
        Assert.Equal(new byte[] { (byte)'l', (byte)'s', 0x03, (byte)'\r' }, sent);

        // The key first: nothing is sent.
        (detached, sent) = await Pump([0x1d, 0x03], 0x1d);
        Assert.True(detached);
        Assert.Empty(sent);
    }

    [Fact]
    public async Task Without_a_detach_key_every_byte_passes_until_the_input_ends()
    {
        byte[] all = [.. Enumerable.Range(0, 256).Select(i => (byte)i)];
        var (detached, sent) = await Pump(all, null);
        Assert.False(detached);
        Assert.Equal(all, sent);
    }

    [Fact]
    public void A_pipe_is_no_terminal_and_cannot_be_made_raw()
    {
        using var pipe = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);
        int fd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        Assert.False(Terminal.IsTerminal(fd));
        Assert.Contains("tcgetattr", Assert.Throws<IOException>(() => Terminal.EnterRawMode(fd)).Message);
    }
}
