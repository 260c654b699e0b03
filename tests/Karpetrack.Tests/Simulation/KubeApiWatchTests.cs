using System.Diagnostics;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

public sealed class KubeApiWatchTests
{
    private static async Task WaitForWatchersAsync(KubeApiServer server, int count)
    {
        var sw = Stopwatch.StartNew();
        while (server.Faults.OpenWatchCount < count)
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "watch did not open");
            await Task.Delay(10);
        }
    }

    [Fact]
    public async Task FromResourceVersion_OnlyLaterEventsInOrder()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        server.Store.Upsert("pods", SimplePod("a", "before"));
        var from = server.Store.CurrentResourceVersion;
        server.Store.Upsert("pods", SimplePod("a", "p1"));
        server.Store.Upsert("nodes", SyntheticCluster.Nodes(1, 3, Now)[0]); // other resources share the counter
        server.Store.Upsert("pods", SimplePod("a", "p1", "node-x"));
        server.Store.Delete("pods", "a", "before");
        using var http = Client(server);

        var events = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={from}", e => e.Count == 3);
        Assert.Equal(["ADDED:p1", "MODIFIED:p1", "DELETED:before"], events.Select(e => $"{Type(e)}:{Name(e)}"));
        var rvs = events.Select(Rv).ToList();
        Assert.Equal(rvs.Order(), rvs);
        Assert.All(rvs, rv => Assert.True(rv > from));
        Assert.Equal(server.Store.CurrentResourceVersion, rvs[^1]); // DELETED carries a new resourceVersion

        // Live events after the replay, still in order.
        var live = ReadWatchAsync(http, $"/api/v1/pods?watch=true&resourceVersion={rvs[^1]}", e => e.Count == 20);
        await WaitForWatchersAsync(server, 1);
        for (var i = 0; i < 20; i++) server.Store.Upsert("pods", SimplePod("b", $"live-{i}"));
        var liveEvents = await live;
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"live-{i}"), liveEvents.Select(Name));
    }

    [Fact]
    public async Task HeldDelivery_QueuesEventsThenReleasesThemInOrder()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        var from = server.Store.CurrentResourceVersion;
        var received = new List<JsonObject>();
        var watch = Task.Run(async () =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            using var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, $"/api/v1/pods?watch=1&resourceVersion={from}"),
                HttpCompletionOption.ResponseHeadersRead, cts.Token);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
            while (await reader.ReadLineAsync(cts.Token) is { } line)
            {
                lock (received) received.Add(JsonNode.Parse(line)!.AsObject());
                if (received.Count == 30) return;
            }
        });
        await WaitForWatchersAsync(server, 1);
        server.Store.HoldWatches();
        for (var i = 0; i < 30; i++) server.Store.Upsert("pods", SimplePod("held", $"p{i}"));
        await Task.Delay(300);
        lock (received) Assert.Empty(received);
        server.Store.ReleaseWatches();
        await watch;
        Assert.Equal(Enumerable.Range(0, 30).Select(i => $"p{i}"), received.Select(Name));
    }

    [Fact]
    public async Task WithoutResourceVersion_SyntheticAddedThenChanges()
    {
        await using var server = await StartWithClusterAsync(nodes: 2, pods: 10);
        using var http = Client(server);
        var watch = ReadWatchAsync(http, "/api/v1/pods?watch=1", e => e.Count == 11);
        await WaitForWatchersAsync(server, 1);
        server.Store.Upsert("pods", SimplePod("z", "new"));
        var events = await watch;
        Assert.All(events, e => Assert.Equal("ADDED", Type(e)));
        Assert.Equal("new", Name(events[^1]));
    }

    [Fact]
    public async Task ExpiredResourceVersion_GetsError410()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions { WatchHistoryLimit = 5 });
        for (var i = 0; i < 10; i++) server.Store.Upsert("pods", SimplePod("a", $"p{i}"));
        using var http = Client(server);
        var events = await ReadWatchAsync(http, "/api/v1/pods?watch=1&resourceVersion=2", _ => false);
        var error = Assert.Single(events);
        Assert.Equal("ERROR", Type(error));
        Assert.Equal(410, (int)error["object"]!["code"]!);
        Assert.Equal("Expired", (string)error["object"]!["reason"]!);
        Assert.Matches(@"^too old resource version: 2 \(\d+\)$", (string)error["object"]!["message"]!);

        // Still within the retained history: works.
        var recent = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion - 2}", e => e.Count == 2);
        Assert.Equal(["p8", "p9"], recent.Select(Name));
    }

    [Fact]
    public async Task Bookmarks_ArriveWithCurrentResourceVersion()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions { BookmarkInterval = TimeSpan.FromMilliseconds(100) });
        server.Store.Upsert("pods", SimplePod("a", "p"));
        server.Store.Upsert("nodes", SyntheticCluster.Nodes(1, 3, Now)[0]);
        using var http = Client(server);
        var rv = server.Store.CurrentResourceVersion;
        var events = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true", e => e.Count == 2);
        Assert.All(events, e =>
        {
            Assert.Equal("BOOKMARK", Type(e));
            Assert.Equal("Pod", (string)e["object"]!["kind"]!);
            Assert.Equal("v1", (string)e["object"]!["apiVersion"]!);
            Assert.Equal(rv, Rv(e));
        });

        // No bookmarks unless asked for.
        var none = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1", _ => false);
        Assert.Empty(none);
    }

    [Fact]
    public async Task TimeoutSeconds_EndsTheStreamCleanly()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        var sw = Stopwatch.StartNew();
        using var response = await http.GetAsync($"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}&timeoutSeconds=1");
        var body = await response.Content.ReadAsStringAsync().WaitAsync(TimeSpan.FromSeconds(30)); // throws if the stream was cut instead of ended
        Assert.Equal("", body);
        // Not before the second asked for. Only a lower bound: the server's timer is on the wall clock (it has no
        // clock seam), and a busy machine can only make the stream last longer.
        Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(900), $"ended after {sw.Elapsed}");
        Assert.Equal(0, server.Faults.OpenWatchCount);
    }

    [Fact]
    public async Task Selectors_TransitionsBecomeAddedAndDeleted()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        server.Store.Upsert("pods", SimplePod("a", "p", labels: new() { ["app"] = "web" }));
        var from = server.Store.CurrentResourceVersion;
        server.Store.Upsert("pods", SimplePod("a", "p", labels: new() { ["app"] = "db" }));       // leaves the selection
        server.Store.Upsert("pods", SimplePod("a", "p", labels: new() { ["app"] = "db", ["x"] = "1" })); // invisible
        server.Store.Upsert("pods", SimplePod("a", "p", labels: new() { ["app"] = "web" }));      // comes back
        server.Store.Upsert("pods", SimplePod("a", "p", "node-1", labels: new() { ["app"] = "web" })); // stays
        using var http = Client(server);
        var events = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={from}&labelSelector=app%3Dweb", e => e.Count == 3);
        Assert.Equal(["DELETED", "ADDED", "MODIFIED"], events.Select(Type));
        // The DELETED object is the last state that matched, stamped with the transition's resourceVersion.
        Assert.Equal("web", (string)events[0]["object"]!["metadata"]!["labels"]!["app"]!);
        Assert.Equal(from + 1, Rv(events[0]));

        var fieldEvents = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={from}&fieldSelector=spec.nodeName%3D", e => e.Count == 4);
        Assert.Equal(["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"], fieldEvents.Select(Type));
        Assert.Equal(from + 4, Rv(fieldEvents[^1]));
        Assert.Null(fieldEvents[^1]["object"]!["spec"]!["nodeName"]);

        var (status, body, _) = await GetJsonAsync(http, "/api/v1/pods?watch=1&fieldSelector=spec.image%3Dx");
        Assert.Equal(400, status);
        Assert.Equal("field label not supported: spec.image", (string)body["message"]!);
        var (s2, b2, _) = await GetJsonAsync(http, "/api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan");
        Assert.Equal(422, s2);
        Assert.Equal("Invalid", (string)b2["reason"]!);
    }

    [Fact]
    public async Task Fault_CloseAllWatches_CutsStreamsMidway()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        using var response = await http.GetAsync($"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}", HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        await WaitForWatchersAsync(server, 1);
        server.Store.Upsert("pods", SimplePod("a", "p"));
        var reader = new StreamReader(stream);
        Assert.Contains("\"ADDED\"", await reader.ReadLineAsync());
        server.Faults.CloseAllWatches();
        await Assert.ThrowsAnyAsync<IOException>(async () => await reader.ReadToEndAsync());
        Assert.Equal(0, server.Faults.OpenWatchCount);
    }

    [Fact]
    public async Task Fault_FailNext429_WithRetryAfterThenRecovers()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        server.Faults.FailNext(2, 429, TimeSpan.FromSeconds(3), pathContains: "/api/v1/pods");
        var (s0, _, _) = await GetJsonAsync(http, "/api/v1/nodes");
        Assert.Equal(200, s0);
        for (var i = 0; i < 2; i++)
        {
            var (status, body, response) = await GetJsonAsync(http, "/api/v1/pods?watch=1");
            Assert.Equal(429, status);
            Assert.Equal("TooManyRequests", (string)body["reason"]!);
            Assert.Equal(3, (int)body["details"]!["retryAfterSeconds"]!);
            Assert.Equal(TimeSpan.FromSeconds(3), response.Headers.RetryAfter!.Delta);
        }
        var (s3, _, _) = await GetJsonAsync(http, "/api/v1/pods");
        Assert.Equal(200, s3);

        server.Faults.FailNext(1, 500);
        var (s4, b4, _) = await GetJsonAsync(http, "/api/v1/nodes");
        Assert.Equal(500, s4);
        Assert.Equal("InternalError", (string)b4["reason"]!);
    }

    [Fact]
    public async Task Fault_InjectWatchEvent_ReachesWatchersInOrder()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        var watch = ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}", e => e.Count == 3);
        await WaitForWatchersAsync(server, 1);
        server.Store.Upsert("pods", SimplePod("a", "before"));
        var raw = """{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"bad","namespace":"a","resourceVersion":"999"},"spec":{"containers":7}}}""";
        Assert.Equal(1, server.Faults.InjectWatchEvent("pods", raw));
        server.Store.Upsert("pods", SimplePod("a", "after"));
        var events = await watch;
        Assert.Equal(["before", "bad", "after"], events.Select(Name));
        Assert.Equal(7, (int)events[1]["object"]!["spec"]!["containers"]!);
    }

    [Fact]
    public async Task Fault_CompactHistoryAndRestart_MakeOldResourceVersionsExpire()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        server.Store.Upsert("pods", SimplePod("a", "p1"));
        server.Store.Upsert("pods", SimplePod("a", "p2"));
        using var http = Client(server);
        var old = server.Store.CurrentResourceVersion - 1;
        server.Faults.CompactHistory();
        var expired = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={old}", _ => false);
        Assert.Equal("ERROR", Type(Assert.Single(expired)));

        // A watch open during the restart is cut; afterwards every object has a resourceVersion >= the floor.
        using var response = await http.GetAsync($"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}", HttpCompletionOption.ResponseHeadersRead);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        await WaitForWatchersAsync(server, 1);
        var before = server.Store.CurrentResourceVersion;
        server.Faults.Restart(1_000_000);
        await Assert.ThrowsAnyAsync<IOException>(async () => await reader.ReadToEndAsync());
        Assert.All(server.Store.List("pods").Items, p => Assert.True(p.ResourceVersion >= 1_000_000));
        var (_, list, _) = await GetJsonAsync(http, "/api/v1/pods");
        Assert.True(long.Parse((string)list["metadata"]!["resourceVersion"]!) >= 1_000_001);
        Assert.Equal(2, list["items"]!.AsArray().Count);

        var stale = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={before}", _ => false);
        Assert.Equal(410, (int)Assert.Single(stale)["object"]!["code"]!);
        var current = server.Store.CurrentResourceVersion;
        var resumed = ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={current}", e => e.Count == 1);
        await WaitForWatchersAsync(server, 1);
        server.Store.Upsert("pods", SimplePod("a", "p3"));
        Assert.Equal(current + 1, Rv(Assert.Single(await resumed)));
    }

    [Fact]
    public async Task SlowWatcher_IsClosedInsteadOfBlockingWriters()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions { WatcherBufferSize = 10 });
        using var http = Client(server);
        using var response = await http.GetAsync($"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}", HttpCompletionOption.ResponseHeadersRead);
        await WaitForWatchersAsync(server, 1);
        // Far more than the buffer, faster than anyone reads: the writer must never block.
        // (A blocked writer never finishes; the deadline is only how long the test waits for it.)
        var big = SyntheticCluster.Pods(SyntheticCluster.Nodes(5, 1, Now), 2000, 1, Now).ToList();
        await Task.Run(() => { foreach (var p in big) server.Store.Upsert("pods", p); }).WaitAsync(TimeSpan.FromSeconds(60));
        var sw2 = Stopwatch.StartNew();
        while (server.Faults.OpenWatchCount > 0 && sw2.Elapsed < TimeSpan.FromSeconds(5)) await Task.Delay(10);
        Assert.Equal(0, server.Faults.OpenWatchCount);
    }

    [Fact]
    public async Task Dispose_EndsOpenWatchesCleanly()
    {
        var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        using var http = Client(server);
        using var response = await http.GetAsync($"/api/v1/pods?watch=1&resourceVersion={server.Store.CurrentResourceVersion}", HttpCompletionOption.ResponseHeadersRead);
        await WaitForWatchersAsync(server, 1);
        var read = response.Content.ReadAsStringAsync();
        await server.DisposeAsync();
        Assert.Equal("", await read.WaitAsync(TimeSpan.FromSeconds(30)));
    }
}
