using System.Buffers;

namespace Karpetrack;

/// <summary>
/// One LIST page, requested as soon as its continue token is known (the API server writes the list's metadata
/// before its items, so while the page before is still being decoded) and read ahead into one pooled buffer of at
/// most <c>limit</c> bytes on a thread of the pool. The reflector then decodes that buffer in place and reads the
/// rest of the body, if any, from the connection: the server produces the next page while this one is decoded,
/// and memory stays bounded by one page ahead. Taken once with <see cref="OpenWindowAsync"/>; disposing it ends
/// the request (the response and its connection are released, the buffer returned) whether or not it was taken.
/// </summary>
internal sealed class ListPrefetch : IAsyncDisposable
{
    private readonly CancellationTokenSource cts;
    private readonly TimeSpan timeout;
    private readonly int limit;
    private readonly ArrayPool<byte> pool;
    private readonly Task run;
    private HttpResponseMessage? response;
    private Stream? body;
    private byte[]? buffer;
    private int filled;
    private bool eof;
    private volatile bool stop;

    /// <param name="open">Sends the GET and returns the response once its headers are in (throws on an error answer).</param>
    /// <param name="limit">At most this many bytes of the body are read ahead; 0 only sends the request.</param>
    /// <param name="timeout">Bound on the request and read-ahead, and again on the rest of the page once taken.</param>
    /// <param name="pool">Where the read-ahead buffer and the window's come from and go back to (the shared pool unless given).</param>
    public ListPrefetch(Func<CancellationToken, Task<HttpResponseMessage>> open, int limit, TimeSpan timeout, CancellationToken ct,
        ArrayPool<byte>? pool = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        this.limit = limit;
        this.pool = pool ?? ArrayPool<byte>.Shared;
        this.timeout = timeout;
        cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        // On the pool: the caller is a parser callback, which must not wait for the request's synchronous part.
        run = Task.Run(() => FillAsync(open));
    }

    /// <summary>Cancelled when the page's time is up or the reflector stops: what reading the rest of the page uses.</summary>
    public CancellationToken Token => cts.Token;

    /// <summary>Bytes read ahead so far (for tests: never more than the limit).</summary>
    public int BytesAhead => Volatile.Read(ref filled);

    private async Task FillAsync(Func<CancellationToken, Task<HttpResponseMessage>> open)
    {
        var token = cts.Token;
        response = await open(token).ConfigureAwait(false);
        body = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
        try
        {
            // Taken already (the page before was short): the window reads from the connection, no buffer is needed.
            if (limit == 0 || stop) return;
            buffer = pool.Rent(limit);
            while (!stop && filled < limit)
            {
                int n = await body.ReadAsync(buffer.AsMemory(filled, limit - filled), token).ConfigureAwait(false);
                if (n == 0) { eof = true; return; }
                Volatile.Write(ref filled, filled + n);
            }
        }
        finally
        {
            // Nothing is in flight until the page is taken: its time starts again then (OpenWindowAsync), so a page
            // that waited behind a slow one is not cut off by the clock it started when it was requested.
            cts.CancelAfter(Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// Stops reading ahead (after the read under way, whose bytes this page needs anyway) and returns a window that
    /// starts with what was read and goes on with the connection. Throws what the request failed with (an error
    /// answer, a network error, its timeout), so a failed page ahead surfaces only once the page before is applied.
    /// </summary>
    public async Task<StreamWindow> OpenWindowAsync()
    {
        stop = true;
        await run.ConfigureAwait(false);
        // The rest of the page gets a full timeout of its own, as a page requested just now would.
        cts.CancelAfter(timeout);
        var taken = buffer;
        buffer = null;
        return taken is null ? new StreamWindow(body!, pool: pool) : new StreamWindow(body!, taken, filled, eof, pool: pool);
    }

    public async ValueTask DisposeAsync()
    {
        stop = true;
        if (!run.IsCompleted) await cts.CancelAsync().ConfigureAwait(false);
        try { await run.ConfigureAwait(false); }
        catch (Exception) when (run.IsFaulted || run.IsCanceled) { }   // the page is being dropped: its failure does not matter
        if (body is not null) await body.DisposeAsync().ConfigureAwait(false);
        response?.Dispose();
        if (buffer is not null) pool.Return(buffer);
        buffer = null;
        cts.Dispose();
    }
}
