using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;
using static Karpetrack.Tests.Spot.SpotTestKit;

namespace Karpetrack.Tests.Simulation;

/// <summary>The fake Spot API itself: its cloud (provisioning, market, pre-emption) and its wire messages, seen raw.</summary>
public sealed class FakeSpotPoolTests
{
    // ---- the fake's cloud ------------------------------------------------------------------

    private static readonly TimeSpan Provisioning = TimeSpan.FromHours(1);

    [Fact]
    public async Task AfterTheProvisioningDelayTheBidIsWonAndNodesJoinWithTheRealLabelsAndLeaveNewestFirst()
    {
        var joined = new ConcurrentQueue<SpotPoolNode>();
        var left = new ConcurrentQueue<string>();
        var clock = new TimerClock(DateTimeOffset.UtcNow);
        await using var server = await Start(provisioning: Provisioning, joined: joined.Enqueue, left: left.Enqueue, clock: clock);
        using var client = Client(server);
        var spec = Spec(desired: 2, bid: 0.02m, labels: Managed(("team", "web")), taints: [new Taint("dedicated", "web", "NoSchedule")]);
        var pool = await client.CreateNodePoolAsync(spec, null, default);
        Assert.Equal("Pending", pool.BidStatus);
        await clock.WhenPending(1);
        clock.Advance(Provisioning - TimeSpan.FromSeconds(1));
        Assert.Equal("Pending", (await client.GetNodePoolAsync(pool.Name, default))!.BidStatus);   // not before the delay
        Assert.Empty(joined);

        clock.Advance(TimeSpan.FromSeconds(1));
        await Until(() => joined.Count == 2, "two nodes to join");
        var now = (await client.GetNodePoolAsync(pool.Name, default))!;
        Assert.Equal(("Fulfilled", 2), (now.BidStatus, now.WonCount));
        Assert.Equal("""{"labels":["karpetrack.io/managed","team"],"annotations":[],"taints":["dedicated"]}""",
            server.Pool(pool.Name)!["status"]!["customMetadataStatus"]!.ToJsonString());
        foreach (var node in joined)
        {
            Assert.Matches("^prod-instance-[0-9]{17}$", node.NodeName);
            Assert.Equal((pool.Name, Medium), (node.Pool, node.ServerClass));
            Assert.Equal(Medium, node.Labels["servers.ngpc.rxt.io/class"]);
            Assert.Equal("spot", node.Labels["servers.ngpc.rxt.io/type"]);
            Assert.Equal(pool.Name, node.Labels["nodepool.ngpc.rxt.io/name"]);
            Assert.Equal("true", node.Labels[Actuator.ManagedLabel]);
            Assert.Equal("web", node.Labels["team"]);
            Assert.Equal("compute1-4", node.Labels["node.kubernetes.io/instance-type"]);
            Assert.Equal("IAD", node.Labels["topology.kubernetes.io/region"]);
            Assert.Equal([new Taint("dedicated", "web", "NoSchedule")], node.Taints);
        }
        var names = joined.Select(n => n.NodeName).ToList();
        Assert.Equal(names, server.NodesOf(pool.Name));
        Assert.Equal(2, names.Distinct().Count());

        await Scale(server, pool.Name, 3);
        await clock.WhenPending(1);
        clock.Advance(Provisioning);
        await Until(() => joined.Count == 3, "a third node");
        Assert.Equal(3, (await client.GetNodePoolAsync(pool.Name, default))!.WonCount);
        var third = joined.Last().NodeName;

        await Scale(server, pool.Name, 1);
        await Until(() => left.Count == 2, "two nodes to leave");
        Assert.Equal([third, names[1]], left);                  // the newest go first
        Assert.Equal([names[0]], server.NodesOf(pool.Name));

        await client.DeleteNodePoolAsync(pool.Name, default);
        await Until(() => left.Count == 3, "the last node to leave");
        Assert.Equal(names[0], left.Last());
        Assert.Empty(server.NodesOf(pool.Name));

        // The "node never joins" fault: the bid is won, no node arrives.
        var stuck = Spec();
        server.NeverJoin(stuck.Name);
        await client.CreateNodePoolAsync(stuck, null, default);
        await clock.WhenPending(1);
        clock.Advance(Provisioning);
        await Until(() => (string?)server.Pool(stuck.Name)!["status"]!["bidStatus"] == "Fulfilled", "the stuck pool's bid");
        Assert.Empty(server.NodesOf(stuck.Name));
        // Hooks run in order: once a later pool's node has joined, the stuck pool has had its chance.
        var later = await client.CreateNodePoolAsync(Spec(), null, default);
        await clock.WhenPending(1);
        clock.Advance(Provisioning);
        await Until(() => joined.Count == 4, "a later pool's node");
        Assert.Equal(later.Name, joined.Last().Pool);
        Assert.Empty(server.NodesOf(stuck.Name));
        Assert.Null(server.LastHookError);
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task AMarketAboveThePoolsBidLosesItAndItsNodesLeaveAfterTheNotice()
    {
        var joined = new ConcurrentQueue<SpotPoolNode>();
        var left = new ConcurrentQueue<string>();
        var clock = new TimerClock(DateTimeOffset.UtcNow);
        var notice = TimeSpan.FromMinutes(2);
        await using var server = await Start(provisioning: TimeSpan.Zero, notice: notice, joined: joined.Enqueue, left: left.Enqueue, clock: clock);
        using var client = Client(server);
        var low = await client.CreateNodePoolAsync(Spec(desired: 2, bid: 0.02m), null, default);
        var high = await client.CreateNodePoolAsync(Spec(bid: 0.06m), null, default);
        await Until(() => joined.Count == 3, "three nodes");
        var lowNodes = server.NodesOf(low.Name);

        server.SetMarketPrice(Medium, 0.03m);
        var lost = (await client.GetNodePoolAsync(low.Name, default))!;
        Assert.Equal(("Lost", 0), (lost.BidStatus, lost.WonCount));
        Assert.Equal("Fulfilled", (await client.GetNodePoolAsync(high.Name, default))!.BidStatus);
        Assert.Equal(0.03m, (await client.ListServerClassesAsync(default)).Items.Single(c => c.Name == Medium).Market);
        await clock.WhenPending(1);
        clock.Advance(notice - TimeSpan.FromSeconds(1));
        Assert.Empty(left);                                     // still inside the notice
        clock.Advance(TimeSpan.FromSeconds(1));
        await Until(() => left.Count == 2, "the outbid nodes to leave");
        Assert.Equal(lowNodes.Order(), left.Order());
        Assert.Single(server.NodesOf(high.Name));

        // A lost pool is deleted without its nodes leaving twice.
        // Hooks run in order: once the high pool's node has left after it, no second leave of the low ones came first.
        await client.DeleteNodePoolAsync(low.Name, default);
        var highNode = server.NodesOf(high.Name).Single();
        await client.DeleteNodePoolAsync(high.Name, default);
        await Until(() => left.Count >= 3, "the high pool's node to leave");
        Assert.Equal(3, left.Count);
        Assert.Equal(highNode, left.Last());
        NoCollectionDelete(server);
    }

    // ---- the fake's wire messages, seen raw -------------------------------------------------

    /// <summary>Another writer (the console, a script) changes a pool's size: Karpetrack itself never scales a pool.</summary>
    private static Task Scale(SpotApiServer server, string pool, int desired) =>
        RawAsync(server, "PATCH", $"{PoolsPath}/{pool}", $"{{\"spec\":{{\"desired\":{desired}}}}}", "application/merge-patch+json", expect: 200);

    private static async Task<string> Denied(SpotApiServer server, string body, int status, string reason)
    {
        var (code, json) = await RawAsync(server, "POST", PoolsPath, body);
        Assert.True(code == status, json.ToJsonString());
        Assert.Equal(reason, (string?)json["reason"]);
        Assert.Equal("Status", (string?)json["kind"]);
        return (string)json["message"]!;
    }

    private const string Prefix = "admission webhook \"vspotnodepool.ngpc.rxt.io\" denied the request: ";

    [Fact]
    public async Task TheFakeAppliesSchemaThenWebhookThenStorageWithTheRealMessages()
    {
        await using var server = await Start();
        var id = Guid.NewGuid().ToString();

        Assert.Equal(400, (await RawAsync(server, "POST", PoolsPath, "{not json")).Status);

        // Schema: 422 Invalid, with the field in details.causes; all broken fields at once.
        var (code, three) = await RawAsync(server, "POST", PoolsPath, PoolJson(id, Medium, "0.0123"));
        Assert.Equal(422, code);
        Assert.Equal($"SpotNodePool.ngpc.rxt.io \"{id}\" is invalid: spec.bidPrice: Invalid value: \"string\": bidPrice can only be a positive number up to three decimal places", (string?)three["message"]);
        Assert.Equal("spec.bidPrice", (string?)three["details"]!["causes"]![0]!["field"]);
        Assert.Contains("spec.bidPrice: Invalid value: \"number\": spec.bidPrice in body must be of type string: \"number\"",
            await Denied(server, PoolJson(id, Medium, "", bidJson: "0.02"), 422, "Invalid"));
        Assert.Contains("spec.bidPrice: Invalid value: \"integer\": spec.bidPrice in body must be of type string: \"integer\"",
            await Denied(server, PoolJson(id, Medium, "", bidJson: "1"), 422, "Invalid"));
        var missing = await Denied(server, $$$"""{"metadata":{"name":"{{{id}}}"},"spec":{"desired":"1","bidPrice":"0.01"}}""", 422, "Invalid");
        Assert.Contains("spec.desired: Invalid value: \"string\": spec.desired in body must be of type integer: \"string\"", missing);
        Assert.Contains("spec.serverClass: Required value", missing);
        Assert.Contains("spec.cloudSpace: Required value", missing);
        // Schema before webhook: a bad name and a bad bid together are a 422 about the bid.
        Assert.Contains("spec.bidPrice", await Denied(server, PoolJson("karpenter-abc", Medium, "0.0001"), 422, "Invalid"));

        // Webhook: 403 Forbidden, the first rule broken, in the real order.
        Assert.StartsWith(Prefix, await Denied(server, PoolJson("karpenter-abc", Medium, "0.003", desired: "0"), 403, "Forbidden"));
        Assert.Contains("lowercase UUID", await Denied(server, PoolJson(id.ToUpperInvariant(), Medium, "0.01"), 403, "Forbidden"));
        Assert.Equal(Prefix + "desired must be at least 1, but got 0", await Denied(server, PoolJson(id, Medium, "0.003", desired: "0"), 403, "Forbidden"));
        Assert.Contains("cloudspace \"nowhere\" not found", await Denied(server, PoolJson(id, Medium, "0.003", cloudspace: "nowhere"), 403, "Forbidden"));
        Assert.Equal(Prefix + "failed to parse serverclass min bid price for io.bm2-iad: strconv.ParseFloat: parsing \"\": invalid syntax",
            await Denied(server, PoolJson(id, "io.bm2-iad", "0.01"), 403, "Forbidden"));
        Assert.Contains("serverclass \"gp.vs9.huge-iad\" not found", await Denied(server, PoolJson(id, "gp.vs9.huge-iad", "0.01"), 403, "Forbidden"));
        Assert.Equal(Prefix + "BidPrice must be greater than or equal to the minimum bid price of 0.010000, but got 0.003000",
            await Denied(server, PoolJson(id, Medium, "0.003"), 403, "Forbidden"));
        server.SetMarketPrice("gp.vs1.large-iad", 0.02m);
        Assert.Equal(Prefix + "BidPrice must be greater than or equal to the market price of 0.020000, but got 0.010000",
            await Denied(server, PoolJson(id, "gp.vs1.large-iad", "0.01"), 403, "Forbidden"));
        Assert.Equal(Prefix + "bid price 0.05 is not on the bid ladder", await Denied(server, PoolJson(id, Medium, "0.05"), 403, "Forbidden"));
        server.BidRule = SpotApiServer.CentsAboveFiveRule;
        Assert.Equal(Prefix + "BidPrice must be a multiple of 0.01 when greater than 0.05, but got 0.086000",
            await Denied(server, PoolJson(id, Medium, "0.086"), 403, "Forbidden"));
        server.BidRule = SpotApiServer.LadderRule;
        Assert.Empty(server.Pools);

        // Storage: created (201, Pending, server-owned metadata), then AlreadyExists.
        var (created, pool) = await RawAsync(server, "POST", PoolsPath, PoolJson(id, Medium, "0.01").Replace("\"autoscaling\"", "\"unknownField\":1,\"autoscaling\""));
        Assert.Equal(201, created);
        Assert.Equal("Pending", (string?)pool["status"]!["bidStatus"]);
        Assert.Equal(0, (int)pool["status"]!["wonCount"]!);
        Assert.NotNull(pool["metadata"]!["uid"]);
        Assert.Null(pool["spec"]!["unknownField"]);             // pruned, as a structural schema does
        Assert.Equal($"spotnodepools.ngpc.rxt.io \"{id}\" already exists", await Denied(server, PoolJson(id, Medium, "0.01"), 409, "AlreadyExists"));

        // Another org's namespace: RBAC says no before anything else.
        var (forbidden, f) = await RawAsync(server, "POST", "/apis/ngpc.rxt.io/v1/namespaces/org-other/spotnodepools", PoolJson(id, Medium, "0.01"));
        Assert.Equal(403, forbidden);
        Assert.Contains("cannot create resource \"spotnodepools\" in API group \"ngpc.rxt.io\" in the namespace \"org-other\"", (string?)f["message"]);

        // Fault injection applies to pool paths too.
        server.FailNext(1, 500, pathContains: "spotnodepools");
        Assert.Equal(500, (await RawAsync(server, "GET", PoolsPath)).Status);
        Assert.Equal(400, (await RawAsync(server, "GET", PoolsPath + "?labelSelector=a%20in%20(")).Status);
    }

    [Fact]
    public async Task TheFakePatchesWithResourceVersionGuardsAndDeletesOneOrAll()
    {
        await using var server = await Start();
        var id = Guid.NewGuid().ToString();
        var (_, pool) = await RawAsync(server, "POST", PoolsPath, PoolJson(id, Medium, "0.01"), expect: 201);
        var path = $"{PoolsPath}/{id}";
        var rv = (string)pool["metadata"]!["resourceVersion"]!;

        var (_, same) = await RawAsync(server, "PATCH", path, $$$"""{"metadata":{"resourceVersion":"{{{rv}}}"},"spec":{"desired":1}}""", "application/merge-patch+json", expect: 200);
        Assert.Equal(rv, (string?)same["metadata"]!["resourceVersion"]);     // a no-op keeps the version

        var (_, bumped) = await RawAsync(server, "PATCH", path, $$$"""{"metadata":{"resourceVersion":"{{{rv}}}"},"spec":{"desired":2}}""", "application/json", expect: 200);
        var rv2 = (string)bumped["metadata"]!["resourceVersion"]!;
        Assert.NotEqual(rv, rv2);
        Assert.Equal(2, (int)bumped["spec"]!["desired"]!);
        Assert.False((bool)bumped["spec"]!["autoscaling"]!["enabled"]!);   // untouched by a merge patch without it

        var (stale, conflict) = await RawAsync(server, "PATCH", path, $$$"""{"metadata":{"resourceVersion":"{{{rv}}}"},"spec":{"desired":3}}""", "application/merge-patch+json");
        Assert.Equal(409, stale);
        Assert.Equal($"Operation cannot be fulfilled on spotnodepools.ngpc.rxt.io \"{id}\": the object has been modified; please apply your changes to the latest version and try again",
            (string?)conflict["message"]);
        Assert.Equal(500, (await RawAsync(server, "PATCH", path, """{"metadata":{"resourceVersion":"abc"}}""", "application/merge-patch+json")).Status);
        Assert.Equal(415, (await RawAsync(server, "PATCH", path, "[]", "application/json-patch+json")).Status);
        Assert.Equal(403, (await RawAsync(server, "PATCH", path, """{"spec":{"desired":0}}""", "application/merge-patch+json")).Status);
        Assert.Equal(422, (await RawAsync(server, "PATCH", path, """{"spec":{"bidPrice":0.02}}""", "application/merge-patch+json")).Status);
        var (_, status) = await RawAsync(server, "PATCH", path, """{"status":{"bidStatus":"Fulfilled"},"metadata":{"uid":"x"}}""", "application/merge-patch+json", expect: 200);
        Assert.Equal("Pending", (string?)status["status"]!["bidStatus"]);     // status and identity are the server's
        Assert.Equal(2, (int)(await RawAsync(server, "GET", path)).Body["spec"]!["desired"]!);

        var (_, deleted) = await RawAsync(server, "DELETE", path, expect: 200);
        Assert.Equal(("Status", "Success"), ((string?)deleted["kind"], (string?)deleted["status"]));
        Assert.Equal(404, (await RawAsync(server, "DELETE", path)).Status);
        Assert.Equal(404, (await RawAsync(server, "GET", path)).Status);

        // The collection DELETE: what the client must never send, because it really deletes everything.
        for (int i = 0; i < 3; i++) await RawAsync(server, "POST", PoolsPath, PoolJson(Guid.NewGuid().ToString(), Medium, "0.01", cloudspace: i == 0 ? "other" : "demo"), expect: 201);
        var (_, list) = await RawAsync(server, "GET", PoolsPath + "?labelSelector=ngpc.rxt.io%2Fcloudspace%3Ddemo", expect: 200);
        Assert.Equal(("SpotNodePoolList", 2), ((string?)list["kind"], list["items"]!.AsArray().Count));
        await RawAsync(server, "DELETE", PoolsPath, expect: 200);
        Assert.Empty(server.Pools);
        Assert.Equal(1, server.CollectionDeletes);
    }
}
