using System.Text;

namespace Karpetrack.Tests.Kube;

public class StreamParserTests
{
    /// <summary>A stream that hands out at most a few bytes per read, to cut objects at every position.</summary>
    private sealed class TrickleStream(byte[] data, int seed) : Stream
    {
        private readonly Random rng = new(seed);
        private int pos;
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, rng.Next(1, 9)), data.Length - pos);
            Array.Copy(data, pos, buffer, offset, n);
            pos += n;
            return n;
        }
        public override bool CanRead => true; public override bool CanSeek => false; public override bool CanWrite => false;
        public override long Length => data.Length; public override long Position { get => pos; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long o, SeekOrigin s) => throw new NotSupportedException();
        public override void SetLength(long v) => throw new NotSupportedException();
        public override void Write(byte[] b, int o, int c) => throw new NotSupportedException();
    }

    private static string PodJson(int i, string cpu = "100m") =>
        """{"metadata":{"name":"p@I@","namespace":"ns","uid":"@U@","resourceVersion":"@I@","managedFields":[{"manager":"kubelet","fieldsV1":{"f:status":{"f:conditions":{}}}}]},"spec":{"nodeName":"n@N@","containers":[{"name":"c","env":[{"name":"A","value":"\"quoted\" \\ \u00e9"}],"resources":{"requests":{"cpu":"@CPU@","memory":"@I@Mi"}}}]},"status":{"phase":"Running"}}"""
            .Replace("@I@", i.ToString()).Replace("@U@", Json.StableGuid("p" + i).ToString()).Replace("@N@", (i % 3).ToString()).Replace("@CPU@", cpu);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task ListIsDecodedItemByItemWhateverTheChunking(int seed)
    {
        var items = string.Join(",", Enumerable.Range(0, 40).Select(i => PodJson(i)));
        var body = """{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"4711","continue":"abc","remainingItemCount":7},"items":[@@]}""".Replace("@@", items);
        using var window = new StreamWindow(new TrickleStream(Encoding.UTF8.GetBytes(body), seed), initialSize: 16);
        var got = new List<PodRecord>();
        var page = await new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (p, e) => { Assert.Null(e); got.Add(p); }, default);
        Assert.Equal("4711", page.ResourceVersion);
        Assert.Equal("abc", page.Continue);
        Assert.Equal(40, got.Count);
        Assert.Equal(Enumerable.Range(0, 40).Select(i => "p" + i), got.Select(p => p.Name));
        Assert.Equal(39L << 20, got[39].Requests[1]);
    }

    [Fact]
    public async Task MetadataAfterItemsStillGivesTheResourceVersion()
    {
        var body = """{"items":[@@],"kind":"PodList","metadata":{"resourceVersion":"9"}}""".Replace("@@", PodJson(1));
        using var window = new StreamWindow(new MemoryStream(Encoding.UTF8.GetBytes(body)));
        var page = await new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (_, _) => { }, default);
        Assert.Equal("9", page.ResourceVersion);
        Assert.Null(page.Continue);
        Assert.Equal(1, page.Items);
    }

    [Fact]
    public async Task TruncatedListIsAnError()
    {
        var body = """{"metadata":{"resourceVersion":"9"},"items":[@@,{"metadata":{"na""".Replace("@@", PodJson(1));
        using var window = new StreamWindow(new MemoryStream(Encoding.UTF8.GetBytes(body)));
        await Assert.ThrowsAnyAsync<Exception>(() => new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (_, _) => { }, default));
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public async Task WatchEventsAreDecodedInOrderIncludingBookmarksErrorsAndMalformedObjects(int seed)
    {
        var lines = new[]
        {
            "{\"type\":\"ADDED\",\"object\":" + PodJson(1) + "}",
            "{\"type\":\"MODIFIED\",\"object\":" + PodJson(2, "12x") + "}",
            """{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"12746"}}}""",
            "{\"type\":\"DELETED\",\"object\":" + PodJson(3) + "}",
            """{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 123 (456)","reason":"Expired","code":410}}""",
        };
        var body = string.Join("\n", lines) + "\n";
        using var window = new StreamWindow(new TrickleStream(Encoding.UTF8.GetBytes(body), seed), initialSize: 32);
        var events = new List<(WatchEventType Type, PodRecord? Pod, KubeStatus? Status, string? Error)>();
        await new WatchParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (t, p, s, e) => events.Add((t, p, s, e)), default);
        Assert.Equal([WatchEventType.Added, WatchEventType.Modified, WatchEventType.Bookmark, WatchEventType.Deleted, WatchEventType.Error], events.Select(e => e.Type));
        Assert.Null(events[0].Error);
        Assert.Contains("12x", events[1].Error);
        Assert.Equal("p2", events[1].Pod!.Name);               // identity survives a bad field
        Assert.Equal("12746", events[2].Pod!.ResourceVersion);
        Assert.Equal(410, events[4].Status!.Code);
        Assert.Equal("Expired", events[4].Status!.Reason);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(7)]
    public async Task WatchEventsWithoutNewlinesBetweenThemStillParse(int seed)
    {
        // The apiserver ends each event with a newline, but a stream of bare concatenated objects is valid too.
        var body = string.Concat(Enumerable.Range(0, 20).Select(i => "{\"type\":\"ADDED\",\"object\":" + PodJson(i) + "} "));
        using var window = new StreamWindow(new TrickleStream(Encoding.UTF8.GetBytes(body), seed), initialSize: 32);
        var names = new List<string>();
        await new WatchParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (_, p, _, _) => names.Add(p!.Name), default);
        Assert.Equal(Enumerable.Range(0, 20).Select(i => "p" + i), names);
    }

    /// <summary>Hands out one piece per read and waits before the next, like a watch between changes.</summary>
    private sealed class PiecesStream(IEnumerable<byte[]> pieces) : Stream
    {
        private readonly IEnumerator<byte[]> next = pieces.GetEnumerator();
        public readonly SemaphoreSlim Allowed = new(0);
        public int Served;
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            await Allowed.WaitAsync(ct);
            if (!next.MoveNext()) return 0;
            next.Current.CopyTo(buffer);
            Served++;
            return next.Current.Length;
        }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => true; public override bool CanSeek => false; public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException(); public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long o, SeekOrigin s) => throw new NotSupportedException();
        public override void SetLength(long v) => throw new NotSupportedException();
        public override void Write(byte[] b, int o, int c) => throw new NotSupportedException();
    }

    [Fact]
    public async Task AWatchEventIsHandledAsSoonAsItsLineIsInAndOnlyOnce()
    {
        // Events cut into pieces smaller than one event, as 4 KB HTTP chunks cut real pods.
        var stream = string.Concat(Enumerable.Range(0, 6).Select(i => "{\"type\":\"ADDED\",\"object\":" + PodJson(i) + "}\n"));
        var bytes = Encoding.UTF8.GetBytes(stream);
        var pieces = bytes.Chunk(97).ToList();
        var source = new PiecesStream(pieces);
        var decoder = new CountingDecoder(new PodDecoder(ResourceTable.Default));
        var names = new List<string>();
        using var window = new StreamWindow(source, initialSize: 1 << 16);
        var parsing = new WatchParser<PodRecord>(decoder).ParseAsync(window, (_, p, _, _) => { lock (names) names.Add(p!.Name); }, default);
        int lineEnd = Array.IndexOf(bytes, (byte)'\n');
        int piecesForFirst = lineEnd / 97 + 1;
        for (int i = 0; i < piecesForFirst; i++) source.Allowed.Release();
        for (var until = DateTime.UtcNow.AddSeconds(5); DateTime.UtcNow < until && names.Count == 0; await Task.Delay(10)) { }
        lock (names) Assert.Equal(["p0"], names);          // delivered without waiting for another read
        Assert.Equal(piecesForFirst, source.Served);
        // The first event showed the newline framing; from then on no event is started before its line is whole.
        int callsForFirst = decoder.Calls;
        source.Allowed.Release(pieces.Count + 1);
        await parsing;
        Assert.Equal(Enumerable.Range(0, 6).Select(i => "p" + i), names);
        Assert.Equal(5, decoder.Calls - callsForFirst);
    }

    private sealed class CountingDecoder(IObjectDecoder<PodRecord> inner) : IObjectDecoder<PodRecord>
    {
        public int Calls;
        public Decode TryDecode(ref System.Text.Json.Utf8JsonReader r, ReadOnlySpan<byte> data, out PodRecord item, ref string? error)
        {
            Calls++;
            return inner.TryDecode(ref r, data, out item, ref error);
        }
        public string? ResourceVersionOf(PodRecord value) => inner.ResourceVersionOf(value);
        public string Describe(PodRecord value) => inner.Describe(value);
    }

    [Fact]
    public async Task WatchStreamCutMidEventIsAnError()
    {
        var body = "{\"type\":\"ADDED\",\"object\":" + PodJson(1) + "}\n" + """{"type":"ADDED","object":{"metadata":""";
        using var window = new StreamWindow(new MemoryStream(Encoding.UTF8.GetBytes(body)));
        var seen = 0;
        await Assert.ThrowsAnyAsync<Exception>(() => new WatchParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (_, _, _, _) => seen++, default));
        Assert.Equal(1, seen);
    }

    [Fact]
    public async Task OneObjectLargerThanTheWindowGrowsIt()
    {
        var big = new string('x', 300_000);
        var pod = """{"metadata":{"name":"big","annotations":{"a":"@@"}},"spec":{"containers":[{"resources":{"requests":{"cpu":"1"}}}]}}""".Replace("@@", big);
        var body = """{"metadata":{"resourceVersion":"1"},"items":[@@]}""".Replace("@@", pod);
        using var window = new StreamWindow(new MemoryStream(Encoding.UTF8.GetBytes(body)), initialSize: 1024);
        PodRecord? got = null;
        await new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (p, _) => got = p, default);
        Assert.Equal(1000, got!.Requests[0]);
    }
}
