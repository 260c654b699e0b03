namespace Karpetrack.Tests.Kube;

public class ReadAheadStreamTests
{
    /// <summary>Counts what reaches the transport: reads (by size asked) and bytes written.</summary>
    private sealed class CountingStream(byte[] data) : Stream
    {
        private int pos;
        public readonly List<int> Reads = [];
        public readonly MemoryStream Written = new();
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer)
        {
            Reads.Add(buffer.Length);
            int n = Math.Min(buffer.Length, data.Length - pos);
            data.AsSpan(pos, n).CopyTo(buffer);
            pos += n;
            return n;
        }
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => new(Read(buffer.Span));
        public override void Write(byte[] buffer, int offset, int count) => Written.Write(buffer, offset, count);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
        {
            Written.Write(buffer.Span);
            return ValueTask.CompletedTask;
        }
        public override bool CanRead => true; public override bool CanSeek => false; public override bool CanWrite => true;
        public override long Length => data.Length; public override long Position { get => pos; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long o, SeekOrigin s) => throw new NotSupportedException();
        public override void SetLength(long v) => throw new NotSupportedException();
    }

    private static byte[] Data(int length) => Enumerable.Range(0, length).Select(i => (byte)(i * 7 + i / 251)).ToArray();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task SmallReadsAreServedFromOneLargeTransportRead(bool async)
    {
        var data = Data(200_000);
        var inner = new CountingStream(data);
        await using var stream = new ReadAheadStream(inner, bufferSize: 64 * 1024);
        var got = new MemoryStream();
        var chunk = new byte[4096];
        int n;
        while ((n = async ? await stream.ReadAsync(chunk) : stream.Read(chunk)) > 0) got.Write(chunk, 0, n);

        Assert.Equal(data, got.ToArray());
        // 200,000 bytes in 4 KB asks: four 64 KB transport reads and the one that finds the end, not 50.
        Assert.Equal(5, inner.Reads.Count);
        Assert.All(inner.Reads, r => Assert.Equal(64 * 1024, r));
    }

    [Fact]
    public async Task ReadsAsLargeAsTheBufferGoStraightToTheTransport()
    {
        var inner = new CountingStream(Data(100_000));
        await using var stream = new ReadAheadStream(inner, bufferSize: 1024);
        var big = new byte[8192];
        Assert.Equal(8192, await stream.ReadAsync(big));
        Assert.Equal([8192], inner.Reads);
        Assert.Equal(Data(100_000)[..8192], big);
    }

    [Fact]
    public async Task AnEmptyReadTakesNothingAndWaitsOnTheTransportOnlyWhenNothingIsBuffered()
    {
        var data = Data(10);
        var inner = new CountingStream(data);
        await using var stream = new ReadAheadStream(inner, bufferSize: 1024);

        Assert.Equal(0, await stream.ReadAsync(Memory<byte>.Empty));
        Assert.Equal([0], inner.Reads);   // nothing buffered: the transport is asked (HttpClient's idle check)

        var one = new byte[1];
        Assert.Equal(1, await stream.ReadAsync(one));
        Assert.Equal(0, await stream.ReadAsync(Memory<byte>.Empty));
        Assert.Equal([0, 1024], inner.Reads);   // nine bytes buffered: answered without the transport

        var rest = new byte[20];
        Assert.Equal(9, await stream.ReadAsync(rest));
        Assert.Equal(data[1..], rest[..9]);
    }

    [Fact]
    public async Task WritesReachTheTransportAtOnceAndReadsContinueAfterThem()
    {
        var inner = new CountingStream(Data(300));
        await using var stream = new ReadAheadStream(inner, bufferSize: 128);
        var first = new byte[100];
        Assert.Equal(100, stream.Read(first));

        await stream.WriteAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray());   // no flush
        stream.Write([1, 2, 3], 0, 3);
        Assert.Equal("GET / HTTP/1.1\r\n\r\n"u8.ToArray().Concat(new byte[] { 1, 2, 3 }).ToArray(), inner.Written.ToArray());

        var rest = new MemoryStream();
        var buffer = new byte[50];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0) rest.Write(buffer, 0, n);
        Assert.Equal(Data(300)[100..], rest.ToArray());
    }
}
