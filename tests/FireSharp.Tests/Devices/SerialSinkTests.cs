using System.Text;
using FireSharp.Devices.Legacy;

namespace FireSharp.Tests.Devices;

public class SerialSinkTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(30);

    [Fact]
    public void MemorySinkFindsTextSplitAcrossWrites()
    {
        var sink = new MemorySerialSink();
        foreach (byte b in "Run /init as init process\n"u8)
        {
            sink.Write([b]);
        }

        Assert.True(sink.WaitFor("/init as", TimeSpan.Zero));
        Assert.True(sink.Contains("process"));
        Assert.False(sink.Contains("kernel panic"));
        Assert.Equal("Run /init as init process\n", sink.GetText());
    }

    [Fact]
    public void MemorySinkWaitTimesOutWhenTextNeverComes()
    {
        var sink = new MemorySerialSink();
        sink.Write("something else"u8);
        Assert.False(sink.WaitFor("marker", TimeSpan.FromMilliseconds(20)));
    }

    [Fact]
    public async Task MemorySinkAsyncWaitCompletesWhenAnotherThreadWritesTheText()
    {
        var sink = new MemorySerialSink();
        sink.Write("boot: mark"u8);
        var wait = sink.WaitForAsync("marker-42", Long);
        Assert.False(wait.IsCompleted);

        var writer = new Thread(() =>
        {
            foreach (byte b in "er-4"u8)
            {
                sink.Write([b]);
            }

            sink.Write("2 done"u8);
        });
        writer.Start();

        Assert.True(await wait);
        writer.Join();
    }

    [Fact]
    public async Task MemorySinkAsyncWaitReturnsFalseOnTimeout()
    {
        var sink = new MemorySerialSink();
        Assert.False(await sink.WaitForAsync("never", TimeSpan.FromMilliseconds(20)));
        Assert.True(await sink.WaitForAsync("", TimeSpan.Zero)); // empty text is always there
    }

    [Fact]
    public async Task MemorySinkAsyncWaitHonoursCancellation()
    {
        var sink = new MemorySerialSink();
        using var cts = new CancellationTokenSource();
        var wait = sink.WaitForAsync("never", Long, cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);
    }

    [Fact]
    public void MemorySinkIsBoundedAndCountsDrops()
    {
        var sink = new MemorySerialSink(maxBytes: 4);
        sink.Write("abcdef"u8);
        sink.Write("g"u8);
        Assert.Equal("abcd", sink.GetText());
        Assert.Equal(3, sink.DroppedBytes);
    }

    [Fact]
    public void StreamSinkDeliversEverythingInOrder()
    {
        var stream = new MemoryStream();
        using var sink = new StreamSerialSink(stream, ownsStream: false);
        for (int i = 0; i < 1000; i++)
        {
            sink.Write(Encoding.ASCII.GetBytes($"line {i}\n"));
        }

        Assert.True(sink.Flush(Long));
        var expected = string.Concat(Enumerable.Range(0, 1000).Select(i => $"line {i}\n"));
        Assert.Equal(expected, Encoding.ASCII.GetString(stream.ToArray()));
        Assert.Equal(0, sink.DroppedBytes);
    }

    [Fact]
    public void StreamSinkNeverBlocksOnAStuckStreamAndDropsBeyondCapacity()
    {
        using var stream = new GatedStream();
        using var sink = new StreamSerialSink(stream, ownsStream: false, capacity: 8);
        sink.Write("a"u8);
        Assert.True(stream.Entered.Wait(Long)); // the pump is now stuck writing "a"

        sink.Write("0123456789"u8); // returns although the stream is stuck
        Assert.Equal(2, sink.DroppedBytes);
        Assert.False(sink.Flush(TimeSpan.FromMilliseconds(10)));

        stream.Release.Set();
        Assert.True(sink.Flush(Long));
        Assert.Equal("a01234567", Encoding.ASCII.GetString(stream.Written.ToArray()));
    }

    [Fact]
    public void StreamSinkSurvivesAFailingStream()
    {
        var sink = new StreamSerialSink(new FailingStream(), ownsStream: true);
        sink.Write("abc"u8);
        Assert.False(sink.Flush(Long));
        Assert.IsType<IOException>(sink.Fault);
        sink.Write("def"u8); // dropped, no exception
        Assert.Equal(6, sink.DroppedBytes);
        sink.Dispose();
    }

    [Fact]
    public void FileSinkWritesTheFile()
    {
        var path = Path.Combine(Path.GetTempPath(), $"firesharp-serial-{Guid.NewGuid():N}.log");
        try
        {
            using (var sink = StreamSerialSink.ForFile(path))
            {
                sink.Write("console line\n"u8);
            }

            Assert.Equal("console line\n", File.ReadAllText(path));

            using (var sink = StreamSerialSink.ForFile(path, append: true))
            {
                sink.Write("more\n"u8);
            }

            Assert.Equal("console line\nmore\n", File.ReadAllText(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TeeSinkCopiesToEverySink()
    {
        var a = new MemorySerialSink();
        var b = new MemorySerialSink();
        var tee = new TeeSerialSink(a, b, NullSerialSink.Instance);
        tee.Write("x"u8);
        Assert.Equal("x", a.GetText());
        Assert.Equal("x", b.GetText());
    }

    [Fact]
    public void UartOutputReachesAStreamSink()
    {
        var stream = new MemoryStream();
        using var sink = new StreamSerialSink(stream, ownsStream: false);
        var uart = new Serial16550(sink, new FakeInterruptLine());
        foreach (byte b in "ok\n"u8)
        {
            uart.Write(0, [b]);
        }

        Assert.True(sink.Flush(Long));
        Assert.Equal("ok\n", Encoding.ASCII.GetString(stream.ToArray()));
    }

    /// <summary>A stream whose writes block until released.</summary>
    private sealed class GatedStream : Stream
    {
        public ManualResetEventSlim Entered { get; } = new();
        public ManualResetEventSlim Release { get; } = new();
        public MemoryStream Written { get; } = new();

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count)
        {
            Entered.Set();
            Release.Wait();
            lock (Written)
            {
                Written.Write(buffer, offset, count);
            }
        }

        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            Release.Set();
            base.Dispose(disposing);
        }
    }

    private sealed class FailingStream : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("broken pipe");
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
