using System.Net.Sockets;

namespace Karpetrack;

/// <summary>
/// The API server connection's transport: reads fill a large buffer with one receive, writes go
/// straight through. HttpClient's HTTP/1.1 connection asks its stream for at most one 4 KB chunk per
/// read, so draining a watch backlog of 5 KB pods cost a receive system call per 4 KB (a large share of
/// the reflector's time on a paravirtualised VM, BENCHMARKS.md) and a thread-pool wake-up each time the socket ran dry
/// between chunks. With this, one receive takes whatever the kernel holds, up to the buffer's size.
/// </summary>
internal sealed class ReadAheadStream(Stream inner, int bufferSize = 64 * 1024) : Stream
{
    private readonly byte[] buffer = new byte[bufferSize];
    private int start, end;

    /// <summary>Connects a TCP socket to the endpoint and wraps its stream.</summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken ct)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(context.DnsEndPoint, ct).ConfigureAwait(false);
            return new ReadAheadStream(new NetworkStream(socket, ownsSocket: true));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] destination, int offset, int count) => Read(destination.AsSpan(offset, count));

    public override int Read(Span<byte> destination)
    {
        if (start == end)
        {
            if (destination.Length == 0 || destination.Length >= buffer.Length) return inner.Read(destination);
            start = 0;
            end = inner.Read(buffer, 0, buffer.Length);
            if (end == 0) return 0;
        }
        return Take(destination);
    }

    public override Task<int> ReadAsync(byte[] destination, int offset, int count, CancellationToken ct) =>
        ReadAsync(destination.AsMemory(offset, count), ct).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken ct = default)
    {
        if (start < end) return new ValueTask<int>(Take(destination.Span));
        // An empty read waits for data without taking any (HttpClient's idle-connection check).
        if (destination.Length == 0 || destination.Length >= buffer.Length) return inner.ReadAsync(destination, ct);
        return FillAndTakeAsync(destination, ct);
    }

    private async ValueTask<int> FillAndTakeAsync(Memory<byte> destination, CancellationToken ct)
    {
        start = 0;
        end = await inner.ReadAsync(buffer, ct).ConfigureAwait(false);
        return end == 0 ? 0 : Take(destination.Span);
    }

    private int Take(Span<byte> destination)
    {
        int n = Math.Min(destination.Length, end - start);
        buffer.AsSpan(start, n).CopyTo(destination);
        start += n;
        return n;
    }

    public override void Write(byte[] source, int offset, int count) => inner.Write(source, offset, count);
    public override void Write(ReadOnlySpan<byte> source) => inner.Write(source);
    public override Task WriteAsync(byte[] source, int offset, int count, CancellationToken ct) => inner.WriteAsync(source, offset, count, ct);
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> source, CancellationToken ct = default) => inner.WriteAsync(source, ct);
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await inner.DisposeAsync().ConfigureAwait(false);
        await base.DisposeAsync().ConfigureAwait(false);
    }
}
