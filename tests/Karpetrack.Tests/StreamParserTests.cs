using System.Text;

namespace Karpetrack.Tests;

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
