using Karpetrack.Simulation;
using Karpetrack.Tests.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Kube;

/// <summary>
/// The pipelined paged LIST: the next page is requested while the current one is decoded, read ahead by at most
/// the configured bytes, and a page that fails ahead of time costs nothing of what came before it.
/// </summary>
public sealed class ListPipelineTests : IAsyncLifetime
{
    private const int PageSize = 7;
    private KubeApiServer server = null!;
    private string dir = "";

    public async Task InitializeAsync()
    {
        server = await SimHelpers.StartWithClusterAsync(nodes: 5, pods: 60);
        dir = Directory.CreateTempSubdirectory("karpetrack-listpipe-").FullName;
    }

    public async Task DisposeAsync()
    {
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>Pods the reflector lists (its field selector leaves finished ones out).</summary>
    private int ListedPods() => server.Store.List("pods").Items.Count(p =>
        new PodDecoder(ResourceTable.Default).DecodeComplete(p.Json.Span, out _).Phase is not (PodPhase.Succeeded or PodPhase.Failed));

    /// <summary>Runs a pod reflector until its list has completed (synced), then stops it.</summary>
    private async Task<ReflectorStatus> ListOnceAsync(IReflectorTarget<PodRecord> target, int prefetchBytes, PageRecorder pages)
    {
        var connection = KubeConnection.Resolve(server.WriteKubeconfig(Path.Combine(dir, "kubeconfig")), null, KubeEnvironment.Process);
        using var client = new KubeClient(connection, TimeSpan.FromSeconds(20), pages);
        var status = new ReflectorStatus("pods");
        var options = new ReflectorOptions
        {
            PageSize = PageSize, PrefetchBytes = prefetchBytes,
            InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(100),
        };
        var reflector = new Reflector<PodRecord>(client, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed",
            new PodDecoder(ResourceTable.Default), target, status, options, NullLogger.Instance, seed: 3);
        using var stop = new CancellationTokenSource();
        var running = Task.Run(() => reflector.RunAsync(stop.Token));
        await ReflectorTests.WaitFor(() => status.Synced || running.IsCompleted, () => $"pods not synced; restarts {status.TotalRestarts}");
        stop.Cancel();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
        return status;
    }

    [Fact]
    public async Task TheNextPageIsRequestedWhileTheCurrentOneIsDecoded()
    {
        int total = ListedPods(), pageCount = (total + PageSize - 1) / PageSize;
        Assert.True(pageCount >= 4);
        var pages = new PageRecorder();
        var model = new ClusterModel(ResourceTable.Default);
        // The first item of every page but the last waits for the next page's request: without pipelining it never
        // comes (the request would follow the page's last item), and the wait gives up.
        var target = new RecordingTarget(model.PodTarget, onUpsert: n =>
        {
            int page = n / PageSize;
            if (n % PageSize == 0 && page + 1 < pageCount && !pages.WaitForRequests(page + 2, TimeSpan.FromSeconds(10)))
                throw new InvalidOperationException($"page {page + 1} was not requested while page {page} was decoded");
        });
        var status = await ListOnceAsync(target, prefetchBytes: 4 << 20, pages);
        Assert.Equal(0, status.TotalRestarts);
        Assert.Equal(total, model.PodCount);
        Assert.Equal(pageCount, pages.Requests);
        Assert.Equal(2, pages.MostOpenAtOnce);   // the page being decoded and one ahead, never more
    }

    [Fact]
    public async Task ReadAheadStopsAtItsLimitAndTheRestComesFromTheConnection()
    {
        const int limit = 1500;   // less than a page of 7 pods: every page is taken over part-read
        int total = ListedPods(), pageCount = (total + PageSize - 1) / PageSize;
        var pages = new PageRecorder();
        var model = new ClusterModel(ResourceTable.Default);
        var ahead = new List<long>();
        // At the last item of every page but the last, the page ahead is read up to the limit and no further.
        var target = new RecordingTarget(model.PodTarget, onUpsert: n =>
        {
            if (n % PageSize != PageSize - 1 || n / PageSize + 1 >= pageCount) return;
            if (!pages.WaitForAhead(limit, TimeSpan.FromSeconds(10))) throw new InvalidOperationException($"page {n / PageSize + 1} was not read ahead");
            ahead.Add(pages.ReadOfThePageAhead());
        });
        var status = await ListOnceAsync(target, prefetchBytes: limit, pages);
        Assert.Equal(0, status.TotalRestarts);
        Assert.Equal(total, model.PodCount);
        Assert.True(pages.SmallestFullPage > limit, $"a page of {pages.SmallestFullPage} bytes fits the limit: the test would not cut one");
        Assert.Equal(Enumerable.Repeat((long)limit, pageCount - 1), ahead);

        // The same pods as a list without any read-ahead.
        var plain = new ClusterModel(ResourceTable.Default);
        await ListOnceAsync(plain.PodTarget, prefetchBytes: 0, new PageRecorder());
        Assert.Equal(Describe(plain), Describe(model));
    }

    [Fact]
    public async Task APageThatFailsAheadLosesNothingOfThePagesBefore()
    {
        int total = ListedPods();
        // The second page's request (the first with a continue token) fails while the first page is decoded.
        server.Faults.FailNext(1, 500, pathContains: "continue=");
        var pages = new PageRecorder();
        var model = new ClusterModel(ResourceTable.Default);
        var target = new RecordingTarget(model.PodTarget, onUpsert: _ => { });
        var status = await ListOnceAsync(target, prefetchBytes: 4 << 20, pages);
        Assert.Equal(1, status.Restarts.GetValueOrDefault("http_error"));
        // The first page was applied whole, the list was not ended on a part (nothing deleted), then listed again.
        Assert.Equal($"begin upsert*{PageSize} begin upsert*{total} end", target.Calls());
        Assert.Equal(total, model.PodCount);
        Assert.Equal(0, pages.Open);   // the failed page's response and every other one released
    }

    private static string Describe(ClusterModel m)
    {
        var s = m.Snapshot();
        return string.Join("\n", s.Nodes.Select(n => $"{n.Name} cpu={n.Allocated[0]} mem={n.Allocated[1]} pods={n.Pods}"))
            + $"\npending={s.PendingPods} total={m.PodCount}";
    }

    /// <summary>Passes calls on to the model's target and writes down their order; runs a hook before each upsert.</summary>
    private sealed class RecordingTarget(IReflectorTarget<PodRecord> inner, Action<int> onUpsert) : IReflectorTarget<PodRecord>
    {
        private readonly List<string> calls = [];
        private int upserts;

        public void BeginRelist() { calls.Add("begin"); upserts = 0; inner.BeginRelist(); }

        public void Upsert(PodRecord item)
        {
            onUpsert(upserts++);
            if (calls.Count == 0 || !calls[^1].StartsWith("upsert", StringComparison.Ordinal)) calls.Add("upsert*0");
            calls[^1] = $"upsert*{int.Parse(calls[^1]["upsert*".Length..], System.Globalization.CultureInfo.InvariantCulture) + 1}";
            inner.Upsert(item);
        }

        public void Delete(PodRecord item) { calls.Add("delete"); inner.Delete(item); }
        public int EndRelist() { calls.Add("end"); return inner.EndRelist(); }
        public string Calls() => string.Join(' ', calls);
    }

    /// <summary>
    /// Sees every pod LIST page on the wire: counts requests, how many responses are open at once, and how many bytes
    /// of each page have been read from the connection.
    /// </summary>
    private sealed class PageRecorder : DelegatingHandler
    {
        private readonly object gate = new();
        private readonly List<CountingStream> bodies = [];
        private int requests, open, mostOpen;

        public int Requests { get { lock (gate) return requests; } }
        public int Open { get { lock (gate) return open; } }
        public int MostOpenAtOnce { get { lock (gate) return mostOpen; } }
        /// <summary>Bytes of the smallest page but the last (a full page), as far as it was read.</summary>
        public long SmallestFullPage { get { lock (gate) return bodies.SkipLast(1).Min(b => b.BytesRead); } }

        /// <summary>Bytes read so far of the newest page while an older page is still open (the page read ahead).</summary>
        public long ReadOfThePageAhead()
        {
            lock (gate)
            {
                var live = bodies.Where(b => !b.Disposed).ToList();
                return live.Count >= 2 ? live[^1].BytesRead : 0;
            }
        }

        /// <summary>Waits until a page ahead has at least <paramref name="bytes"/> read.</summary>
        public bool WaitForAhead(long bytes, TimeSpan limit)
        {
            var deadline = DateTime.UtcNow + limit;
            while (ReadOfThePageAhead() < bytes)
            {
                if (DateTime.UtcNow > deadline) return false;
                Thread.Sleep(5);
            }
            return true;
        }

        public bool WaitForRequests(int count, TimeSpan limit)
        {
            var deadline = DateTime.UtcNow + limit;
            lock (gate)
            {
                while (requests < count)
                {
                    var left = deadline - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero) return false;
                    Monitor.Wait(gate, left);
                }
                return true;
            }
        }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            bool page = request.RequestUri!.PathAndQuery.StartsWith("/api/v1/pods?", StringComparison.Ordinal)
                && request.RequestUri.Query.Contains("limit=", StringComparison.Ordinal);
            if (!page) return await base.SendAsync(request, ct);
            // A page is open from its request on (not from its answer's headers, which a loaded server may send after the
            // page before is already decoded) until its body is released.
            lock (gate) { requests++; open++; mostOpen = Math.Max(mostOpen, open); Monitor.PulseAll(gate); }
            HttpResponseMessage response;
            CountingStream body;
            try
            {
                response = await base.SendAsync(request, ct);
                if (!response.IsSuccessStatusCode) { Closed(); return response; }
                body = new CountingStream(await response.Content.ReadAsStreamAsync(ct), this);
            }
            catch
            {
                Closed();
                throw;
            }
            lock (gate) bodies.Add(body);
            var content = new StreamContent(body);
            foreach (var h in response.Content.Headers) content.Headers.TryAddWithoutValidation(h.Key, h.Value);
            response.Content = content;
            return response;
        }

        private void Closed()
        {
            lock (gate) open--;
        }

        private sealed class CountingStream(Stream inner, PageRecorder owner) : Stream
        {
            private long read;
            public long BytesRead => Interlocked.Read(ref read);
            public bool Disposed { get; private set; }

            public override bool CanRead => true;
            public override bool CanSeek => false;
            public override bool CanWrite => false;
            public override long Length => throw new NotSupportedException();
            public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
            public override void Flush() { }
            public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
            public override void SetLength(long value) => throw new NotSupportedException();
            public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

            public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

            public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) =>
                Count(await inner.ReadAsync(buffer, ct));

            public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
                ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

            private int Count(int n)
            {
                Interlocked.Add(ref read, n);
                return n;
            }

            protected override void Dispose(bool disposing)
            {
                if (disposing && !Disposed)
                {
                    Disposed = true;
                    owner.Closed();
                    inner.Dispose();
                }
                base.Dispose(disposing);
            }
        }
    }

    /// <summary>
    /// A page read ahead and then left waiting behind a slow page is not cut off by the time it started when it was
    /// requested: its clock stops once nothing is in flight and starts again, whole, when the page is taken.
    /// </summary>
    [Fact]
    public async Task APageWaitingToBeTakenIsNotCutOffByItsRequestTime()
    {
        var body = "0123456789abcdefghij"u8.ToArray();
        var timeout = TimeSpan.FromMilliseconds(200);
        await using var prefetch = new ListPrefetch(_ => Task.FromResult(new HttpResponseMessage { Content = new ByteArrayContent(body) }),
            limit: 8, timeout, CancellationToken.None);
        await ReflectorTests.WaitFor(() => prefetch.BytesAhead == 8, () => $"read ahead {prefetch.BytesAhead} of 8 bytes");
        // The page before takes longer than a whole timeout to decode (a sleep that only makes the old rule fail more surely).
        await Task.Delay(timeout * 3);
        Assert.False(prefetch.Token.IsCancellationRequested, "the page waiting to be taken was cancelled by the clock of its request");
        using var window = await prefetch.OpenWindowAsync();
        while (!window.Eof) await window.FillAsync(prefetch.Token);
        Assert.Equal(body, window.Data.ToArray());
    }


    /// <summary>An array pool that counts what it lends and gets back.</summary>
    private sealed class CountingPool : System.Buffers.ArrayPool<byte>
    {
        private readonly System.Buffers.ArrayPool<byte> inner = Create();
        public int Rented, Returned;
        public override byte[] Rent(int minimumLength) { Interlocked.Increment(ref Rented); return inner.Rent(minimumLength); }
        public override void Return(byte[] array, bool clearArray = false) { Interlocked.Increment(ref Returned); inner.Return(array, clearArray); }
    }

    /// <summary>
    /// A page's buffers - the read-ahead, the window that adopts it, the larger one it grows into - all come from the pool
    /// the list gives (the reflector's own for one list, dropped after it) and all go back to it, whether the page was
    /// taken or dropped unread.
    /// </summary>
    [Fact]
    public async Task APagesBuffersComeFromTheListsOwnPoolAndAllGoBack()
    {
        var body = Enumerable.Range(0, 3_000).Select(i => (byte)('a' + i % 26)).ToArray();
        var pool = new CountingPool();
        await using (var prefetch = new ListPrefetch(_ => Task.FromResult(new HttpResponseMessage { Content = new ByteArrayContent(body) }),
            limit: 1_024, TimeSpan.FromSeconds(20), CancellationToken.None, pool))
        {
            await ReflectorTests.WaitFor(() => prefetch.BytesAhead == 1_024, () => $"read ahead {prefetch.BytesAhead} of 1024 bytes");
            using var window = await prefetch.OpenWindowAsync();
            while (!window.Eof) await window.FillAsync(prefetch.Token);   // the 1 KB buffer is full: the window grows twice
            Assert.Equal(body, window.Data.ToArray());
        }
        Assert.Equal(3, pool.Rented);
        Assert.Equal(pool.Rented, pool.Returned);

        var dropped = new CountingPool();
        await using (var prefetch = new ListPrefetch(_ => Task.FromResult(new HttpResponseMessage { Content = new ByteArrayContent(body) }),
            limit: 1_024, TimeSpan.FromSeconds(20), CancellationToken.None, dropped))
            await ReflectorTests.WaitFor(() => prefetch.BytesAhead == 1_024, () => $"read ahead {prefetch.BytesAhead} of 1024 bytes");
        Assert.Equal((1, 1), (dropped.Rented, dropped.Returned));
    }
}
