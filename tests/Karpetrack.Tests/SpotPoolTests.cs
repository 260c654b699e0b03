using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests;

/// <summary>Runs a callback before each request leaves the client: another writer racing us, seen from the wire.</summary>
internal sealed class Interceptor(Func<HttpRequestMessage, Task> before) : DelegatingHandler(new SocketsHttpHandler())
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        await before(request);
        return await base.SendAsync(request, ct);
    }
}

public sealed class SpotPoolTests
{
    private const string Ns = "org-knyiltp8zznvkz5g";
    private const string PoolsPath = $"/apis/ngpc.rxt.io/v1/namespaces/{Ns}/spotnodepools";
    private const string Medium = "gp.vs1.medium-iad";     // min bid 0.01, market 0.001 in the embedded snapshot

    private static SpotApiClient Client(SpotApiServer server, TimeProvider? clock = null, Func<SpotApiOptions, SpotApiOptions>? tweak = null, HttpMessageHandler? handler = null)
    {
        var options = new SpotApiOptions
        {
            ApiUrl = server.BaseAddress, AuthUrl = server.BaseAddress, RatePerSecond = 0,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
        };
        return new SpotApiClient(tweak is null ? options : tweak(options), SpotApiServer.DemoRefreshToken, NullLogger.Instance, clock, handler);
    }

    private static Task<SpotApiServer> Start(TimeSpan? provisioning = null, TimeSpan? notice = null, Action<SpotPoolNode>? joined = null, Action<string>? left = null,
        TimeProvider? clock = null, TimeSpan? tokenLifetime = null) =>
        SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            ProvisioningDelay = provisioning ?? TimeSpan.FromHours(1),
            PreemptionNotice = notice ?? TimeSpan.Zero,
            NodeJoined = joined,
            NodeLeft = left,
            Clock = clock,
            TokenLifetime = tokenLifetime ?? TimeSpan.FromHours(24),
            Cloudspaces = new Dictionary<string, string> { ["demo"] = "us-east-iad-1", ["other"] = "us-east-iad-1" },
        });

    private static Dictionary<string, string> Managed(params (string Key, string Value)[] more)
    {
        var labels = new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" };
        foreach (var (k, v) in more) labels[k] = v;
        return labels;
    }

    private static SpotNodePoolSpec Spec(string? name = null, string serverClass = Medium, int desired = 1, decimal bid = 0.01m,
        IReadOnlyDictionary<string, string>? labels = null, IReadOnlyList<Taint>? taints = null, string cloudspace = "demo") =>
        new(name ?? Guid.NewGuid().ToString(), serverClass, desired, bid, cloudspace, labels ?? Managed(), taints);

    private static long Count(SpotApiClient c, string method, string code) => c.Requests.GetValueOrDefault((method, code));

    private static int Sent(SpotApiServer server, string method) => server.RequestLog.Count(l => l.StartsWith(method + " " + PoolsPath, StringComparison.Ordinal));

    /// <summary>The client never addresses the pool collection with DELETE: the real API would delete every pool.</summary>
    private static void NoCollectionDelete(SpotApiServer server)
    {
        Assert.Equal(0, server.CollectionDeletes);
        Assert.DoesNotContain(server.RequestLog, l => l.StartsWith("DELETE ", StringComparison.Ordinal) && !Regex.IsMatch(l, "/spotnodepools/[^/?]+$"));
    }

    private static async Task Until(Func<bool> done, string what, int seconds = 10)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!done())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }

    // ---- client against the fake ----------------------------------------------------------

    [Fact]
    public async Task PoolsAreCreatedListedReadAndDeletedEndToEnd()
    {
        await using var server = await Start();
        using var client = Client(server);
        var spec = Spec(desired: 2, bid: 0.020m, labels: Managed(("team", "web")), taints: [new Taint("dedicated", "web", "NoSchedule"), new Taint("spot", null, "PreferNoSchedule")]);

        var created = await client.CreateNodePoolAsync(spec, maxBid: 0.05m, default);
        Assert.Equal((spec.Name, Ns, Medium, 2, "0.02", "demo"), (created.Name, created.Namespace, created.ServerClass, created.Desired, created.BidPrice, created.CloudSpace));
        Assert.Equal(0.02m, created.Bid);
        Assert.True(created.IsManaged);
        Assert.Equal("demo", created.Labels["ngpc.rxt.io/cloudspace"]);
        Assert.Equal("web", created.CustomLabels["team"]);
        Assert.Equal(("Pending", 0), (created.BidStatus, created.WonCount));
        Assert.NotNull(created.Created);
        Assert.Equal(1, Count(client, "POST", "201"));

        // What reached the server: the bid as a string, autoscaling off, taints with and without a value.
        var stored = server.Pool(spec.Name)!;
        Assert.Equal(JsonValueKind.String, stored["spec"]!["bidPrice"]!.GetValueKind());
        Assert.False(stored["spec"]!["autoscaling"]!["enabled"]!.GetValue<bool>());
        Assert.Equal("""[{"key":"dedicated","value":"web","effect":"NoSchedule"},{"key":"spot","effect":"PreferNoSchedule"}]""", stored["spec"]!["customTaints"]!.ToJsonString());
        Assert.NotNull(stored["metadata"]!["uid"]);
        Assert.Equal(1, stored["metadata"]!["generation"]!.GetValue<int>());

        var elsewhere = await client.CreateNodePoolAsync(Spec(cloudspace: "other"), null, default);
        var listed = await client.ListNodePoolsAsync("demo", default);
        Assert.Equal([spec.Name], listed.Select(p => p.Name));
        Assert.Contains("labelSelector=ngpc.rxt.io%2Fcloudspace%3Ddemo", server.RequestLog.Single(l => l.StartsWith("GET " + PoolsPath + "?", StringComparison.Ordinal)));
        Assert.Equal(created.ResourceVersion, (await client.GetNodePoolAsync(spec.Name, default))!.ResourceVersion);
        Assert.Null(await client.GetNodePoolAsync(Guid.NewGuid().ToString(), default));

        Assert.True(await client.DeleteNodePoolAsync(spec.Name, default));
        Assert.Null(await client.GetNodePoolAsync(spec.Name, default));
        Assert.False(await client.DeleteNodePoolAsync(spec.Name, default));
        Assert.Equal([elsewhere.Name], server.Pools.Select(p => (string)p["metadata"]!["name"]!));
        Assert.Equal(1, Count(client, "DELETE", "200"));
        NoCollectionDelete(server);
    }

    [Fact]
    public void BidsAreWrittenWithoutTrailingZeros()
    {
        Assert.Equal(["0.02", "0.02", "1", "0.125", "0.1"], new[] { 0.02m, 0.020m, 1m, 0.125m, 0.1000m }.Select(SpotPoolRules.FormatBid));
    }

    [Theory]
    [InlineData("prefixed name", "not a lowercase UUID")]
    [InlineData("uppercase name", "not a lowercase UUID")]
    [InlineData("no nodes", "below 1")]
    [InlineData("zero bid", "not positive")]
    [InlineData("negative bid", "not positive")]
    [InlineData("four decimals", "more than three decimals")]
    [InlineData("over the cap", "above the maximum")]
    [InlineData("unlabelled", "karpetrack.io/managed=true")]
    [InlineData("managed=false", "karpetrack.io/managed=true")]
    public async Task ObviouslyBadSpecsAreRefusedBeforeAnythingIsSent(string which, string why)
    {
        var (spec, maxBid) = which switch
        {
            "prefixed name" => (Spec(name: "karpetrack-gp-vs1-medium"), (decimal?)null),
            "uppercase name" => (Spec(name: "3F2B6C1E-8D7A-4E1B-9C55-2B1F0A9E7D41"), null),
            "no nodes" => (Spec(desired: 0), null),
            "zero bid" => (Spec(bid: 0m), null),
            "negative bid" => (Spec(bid: -0.01m), null),
            "four decimals" => (Spec(bid: 0.0125m), null),
            "over the cap" => (Spec(bid: 0.04m), 0.03m),
            "unlabelled" => (Spec(labels: new Dictionary<string, string> { ["team"] = "web" }), null),
            _ => (Spec(labels: new Dictionary<string, string> { [Actuator.ManagedLabel] = "false" }), null),
        };
        await using var server = await Start();
        using var client = Client(server);
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(spec, maxBid, default));
        Assert.Equal("invalid", e.Reason);
        Assert.Null(e.StatusCode);
        Assert.Contains(why, e.Message);
        Assert.Contains("not sent", e.Message);
        Assert.Empty(server.RequestLog);
        Assert.Empty(server.Pools);
    }

    [Theory]
    [InlineData("BidPrice must be greater than or equal to the minimum bid price of 0.010000, but got 0.003000", 0.003, 0.01, "minimum bid")]
    [InlineData("BidPrice must be greater than or equal to the minimum bid price of 0.050000, but got 0.010000", 0.01, 0.06, "minimum bid")]
    [InlineData("BidPrice must be greater than or equal to the market price of 0.011000, but got 0.010000", 0.01, 0.02, "market price")]
    [InlineData("BidPrice must be greater than or equal to the market price of 2.690000, but got 0.270000", 0.27, 2.72, "market price")]
    [InlineData("bid price 0.05 is not on the bid ladder", 0.05, 0.06, "bid ladder")]
    [InlineData("bid price 0.11 is not on the bid ladder", 0.11, 0.13, "bid ladder")]
    [InlineData("BidPrice must be a multiple of 0.01 when greater than 0.05, but got 0.086000", 0.086, 0.09, "bid step")]
    [InlineData("BidPrice must be a multiple of 0.005 between 0.001 and 0.05", 0.012, 0.015, "bid step")]
    [InlineData("spec.bidPrice: Invalid value: \"string\": bidPrice can only be a positive number up to three decimal places", 0.0123, 0.013, "three decimals")]
    public void ARejectionIsReadForTheBidItAsksFor(string message, double sent, double expected, string rule)
    {
        var c = SpotPoolRules.CorrectBid("admission webhook \"vspotnodepool.ngpc.rxt.io\" denied the request: " + message, (decimal)sent);
        Assert.NotNull(c);
        Assert.Equal((decimal)expected, c.Bid);
        Assert.Equal(rule, c.Rule);
        Assert.Null(SpotPoolRules.CorrectBid("cloudspace \"x\" not found in namespace \"y\"", 0.01m));
        Assert.Null(SpotPoolRules.CorrectBid(null, 0.01m));
    }

    [Fact]
    public async Task ABidUnderTheStatedMinimumIsCorrectedOnceAndNeverBeyondTheMaximum()
    {
        await using var server = await Start();
        using var client = Client(server);

        // Under the class's minimum bid: the message states 0.010000; corrected and retried once.
        var floor = await client.CreateNodePoolAsync(Spec(bid: 0.005m), maxBid: 0.05m, default);
        Assert.Equal("0.01", floor.BidPrice);
        Assert.Equal((1, 1), (Count(client, "POST", "403"), Count(client, "POST", "201")));

        // Under the market: the stated market 0.011 goes up onto the ladder, 0.02.
        server.SetMarketPrice(Medium, 0.011m);
        var market = await client.CreateNodePoolAsync(Spec(bid: 0.01m), maxBid: null, default);
        Assert.Equal("0.02", market.BidPrice);

        // The correction would exceed the maximum: refused, named, not retried.
        server.SetMarketPrice(Medium, 0.07m);
        int posts = Sent(server, "POST");
        var capped = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(Spec(bid: 0.02m), maxBid: 0.06m, default));
        Assert.Equal(("bid_rejected", 403), (capped.Reason, capped.StatusCode));
        Assert.Contains("market price of 0.070000", capped.Message);
        Assert.Contains("above the maximum 0.06", capped.Message);
        Assert.Equal(posts + 1, Sent(server, "POST"));
        Assert.Equal(2, server.Pools.Count);
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task ALadderRuleSwappedInTheFakeIsReadFromItsMessageAndCorrectedOnlyOnce()
    {
        await using var server = await Start();
        using var client = Client(server);
        Assert.Equal("bid price 0.05 is not on the bid ladder", SpotApiServer.LadderRule(0.05m));

        // The May 2026 rule: whole cents above 0.05. 0.086 → 0.09, which that rule accepts (today's ladder would not).
        server.BidRule = SpotApiServer.CentsAboveFiveRule;
        var cents = await client.CreateNodePoolAsync(Spec(bid: 0.086m), maxBid: 0.1m, default);
        Assert.Equal("0.09", cents.BidPrice);

        // Back to the ladder: an off-ladder bid goes to the next rung.
        server.BidRule = SpotApiServer.LadderRule;
        var rung = await client.CreateNodePoolAsync(Spec(bid: 0.05m), maxBid: 0.1m, default);
        Assert.Equal("0.06", rung.BidPrice);

        // A ladder the client does not know (nickels only): its correction is refused as well, and it stops after one retry.
        server.BidRule = bid => decimal.Remainder(bid, 0.05m) == 0 ? null : $"bid price {bid} is not on the bid ladder";
        int posts = Sent(server, "POST");
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(Spec(bid: 0.07m), maxBid: 0.2m, default));
        Assert.Equal("bid_rejected", e.Reason);
        Assert.Contains("the corrected bid was refused too", e.Message);
        Assert.Contains("bid price 0.08 is not on the bid ladder", e.ServerMessage);
        Assert.Equal(posts + 2, Sent(server, "POST"));

        // A rejection asking for the very bid sent cannot be corrected: no retry.
        server.BidRule = _ => "bid price 0.04 is not on the bid ladder";
        posts = Sent(server, "POST");
        e = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(Spec(bid: 0.04m), maxBid: null, default));
        Assert.Contains("the bid the message asks for is the one sent", e.Message);
        Assert.Equal(posts + 1, Sent(server, "POST"));
        NoCollectionDelete(server);
    }

    [Theory]
    [InlineData(503)]
    [InlineData(0)]    // the connection dropped after the pool was stored
    public async Task ACreateWhoseAnswerWasLostIsRetriedAndEndsWithOnePool(int lostWith)
    {
        await using var server = await Start();
        using var client = Client(server);
        var spec = Spec(desired: 2);
        server.FailAfterHandling(1, lostWith, "POST");
        var pool = await client.CreateNodePoolAsync(spec, null, default);
        Assert.Equal((spec.Name, 2), (pool.Name, pool.Desired));
        Assert.Single(server.Pools);
        Assert.Equal(2, Sent(server, "POST"));
        Assert.Equal(1, Count(client, "POST", "409"));
        Assert.Equal(1, Count(client, "POST", lostWith == 0 ? "error" : "503"));

        // A name taken by a pool that is not ours (or of another class) is an error, never adopted.
        var taken = Spec();
        await RawAsync(server, "POST", PoolsPath, PoolJson(taken.Name, Medium, "0.01", """{"team":"theirs"}"""), expect: 201);
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(taken, null, default));
        Assert.Equal("conflict", e.Reason);
        Assert.Contains("not managed by Karpetrack", e.Message);
        var otherClass = await Assert.ThrowsAsync<SpotApiException>(() => client.CreateNodePoolAsync(spec with { ServerClass = "gp.vs1.large-iad" }, null, default));
        Assert.Contains($"with class {Medium}", otherClass.Message);
        Assert.Equal(2, server.Pools.Count);
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task A429StormAndServerErrorsWithRetryAfterAreRetriedThenTheCircuitOpensObservably()
    {
        var clock = new SkippingClock();
        await using var server = await Start();
        using var client = Client(server, clock, o => o with { MaxAttempts = 4, BreakerThreshold = 5 });
        var pool = await client.CreateNodePoolAsync(Spec(), null, default);

        // 5xx with Retry-After: waited out as asked, then the call succeeds.
        server.FailNext(2, 503, TimeSpan.FromSeconds(2), "spotnodepools");
        Assert.Single(await client.ListNodePoolsAsync("demo", default));
        Assert.Equal([TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(2)], clock.Slept);
        Assert.Equal(2, Count(client, "GET", "503"));

        // A storm of 429s: four attempts, then another call's first failure opens the circuit.
        server.FailNext(1000, 429, TimeSpan.FromSeconds(1), "spotnodepools");
        var first = await Assert.ThrowsAsync<SpotApiException>(() => client.GetNodePoolAsync(pool.Name, default));
        Assert.Equal(("throttled", 429), (first.Reason, first.StatusCode));
        Assert.False(client.CircuitOpen);
        await Assert.ThrowsAsync<SpotApiException>(() => client.DeleteNodePoolAsync(pool.Name, default));
        Assert.True(client.CircuitOpen);
        Assert.Equal(1, client.CircuitOpenings);
        var refused = await Assert.ThrowsAsync<SpotApiException>(() => client.GetNodePoolAsync(pool.Name, default));
        Assert.Equal("circuit_open", refused.Reason);
        Assert.Equal(5, Count(client, "GET", "429"));          // the metric's method and code labels
        Assert.Equal(0, Sent(server, "DELETE"));

        server.ClearFaults();
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(pool.Name, (await client.GetNodePoolAsync(pool.Name, default))!.Name);
        Assert.False(client.CircuitOpen);
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task AnIdTokenExpiringOrRevokedMidSequenceIsExchangedAgain()
    {
        var clock = new ManualClock();
        await using var server = await Start(clock: clock, tokenLifetime: TimeSpan.FromHours(1));
        using var client = Client(server, clock);
        var pool = await client.CreateNodePoolAsync(Spec(), null, default);
        Assert.Equal(1, server.TokenExchanges);

        clock.Advance(TimeSpan.FromHours(2));                   // expired between create and list
        Assert.Single(await client.ListNodePoolsAsync("demo", default));
        Assert.Equal(2, server.TokenExchanges);
        Assert.Equal(0, Count(client, "GET", "401"));

        server.RevokeIssuedTokens();                            // refused before its time: one 401, one exchange
        Assert.True(await client.DeleteNodePoolAsync(pool.Name, default));
        Assert.Equal(3, server.TokenExchanges);
        Assert.Equal(1, Count(client, "GET", "401"));
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task APoolKarpetrackDidNotCreateIsNeverDeleted()
    {
        await using var server = await Start();
        using var client = Client(server);
        var theirs = Guid.NewGuid().ToString();
        server.AdoptPool(theirs, Medium, 0.02m, new Dictionary<string, string> { ["team"] = "data" }, ["prod-instance-17851864681050001"]);
        var listed = Assert.Single(await client.ListNodePoolsAsync("demo", default));
        Assert.False(listed.IsManaged);
        Assert.Equal(("Fulfilled", 1, 0.02m), (listed.BidStatus, listed.WonCount, listed.Bid));

        var delete = await Assert.ThrowsAsync<SpotApiException>(() => client.DeleteNodePoolAsync(theirs, default));
        Assert.Equal("unmanaged", delete.Reason);
        Assert.Contains("will not delete it", delete.Message);
        Assert.Equal(0, Sent(server, "DELETE"));
        Assert.Equal(1, (await client.GetNodePoolAsync(theirs, default))!.Desired);
        Assert.Equal(["prod-instance-17851864681050001"], server.NodesOf(theirs));
        await Assert.ThrowsAsync<ArgumentException>(() => client.DeleteNodePoolAsync("", default));
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task MalformedPoolsAreSkippedAndCounted()
    {
        await using var server = await Start();
        using var client = Client(server);
        await client.CreateNodePoolAsync(Spec(), null, default);
        server.Put("spotnodepools", new JsonObject
        {
            ["metadata"] = new JsonObject { ["name"] = "broken", ["namespace"] = Ns, ["labels"] = new JsonObject { ["ngpc.rxt.io/cloudspace"] = "demo" } },
            ["spec"] = new JsonObject { ["serverClass"] = Medium, ["desired"] = "two", ["bidPrice"] = "0.01" },
        });
        Assert.Single(await client.ListNodePoolsAsync("demo", default));
        Assert.Equal(1, client.MalformedPools);
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.GetNodePoolAsync("broken", default));
        Assert.Equal("malformed", e.Reason);
    }

    // ---- the fake's cloud ------------------------------------------------------------------

    [Fact]
    public async Task AfterTheProvisioningDelayTheBidIsWonAndNodesJoinWithTheRealLabelsAndLeaveNewestFirst()
    {
        var joined = new ConcurrentQueue<SpotPoolNode>();
        var left = new ConcurrentQueue<string>();
        await using var server = await Start(provisioning: TimeSpan.FromMilliseconds(300), joined: joined.Enqueue, left: left.Enqueue);
        using var client = Client(server);
        var spec = Spec(desired: 2, bid: 0.02m, labels: Managed(("team", "web")), taints: [new Taint("dedicated", "web", "NoSchedule")]);
        var pool = await client.CreateNodePoolAsync(spec, null, default);
        Assert.Equal("Pending", pool.BidStatus);
        Assert.Empty(joined);

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
        await Until(() => (string?)server.Pool(stuck.Name)!["status"]!["bidStatus"] == "Fulfilled", "the stuck pool's bid");
        await Task.Delay(200);
        Assert.Equal(3, joined.Count);
        Assert.Empty(server.NodesOf(stuck.Name));
        Assert.Null(server.LastHookError);
        NoCollectionDelete(server);
    }

    [Fact]
    public async Task AMarketAboveThePoolsBidLosesItAndItsNodesLeaveAfterTheNotice()
    {
        var joined = new ConcurrentQueue<SpotPoolNode>();
        var left = new ConcurrentQueue<string>();
        await using var server = await Start(provisioning: TimeSpan.Zero, notice: TimeSpan.FromSeconds(1.5), joined: joined.Enqueue, left: left.Enqueue);
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
        Assert.Empty(left);                                     // still inside the notice
        await Until(() => left.Count == 2, "the outbid nodes to leave");
        Assert.Equal(lowNodes.Order(), left.Order());
        Assert.Single(server.NodesOf(high.Name));

        // A lost pool is deleted without its nodes leaving twice.
        await client.DeleteNodePoolAsync(low.Name, default);
        await Task.Delay(100);
        Assert.Equal(2, left.Count);
        NoCollectionDelete(server);
    }

    // ---- the fake's wire messages, seen raw -------------------------------------------------

    private static string PoolJson(string name, string serverClass, string bid, string customLabels = """{"karpetrack.io/managed":"true"}""",
        string desired = "1", string cloudspace = "demo", string bidJson = "")
    {
        var bidValue = bidJson.Length > 0 ? bidJson : $"\"{bid}\"";
        return $$$"""
            {"apiVersion":"ngpc.rxt.io/v1","kind":"SpotNodePool",
             "metadata":{"name":"{{{name}}}","namespace":"{{{Ns}}}","labels":{"ngpc.rxt.io/cloudspace":"{{{cloudspace}}}"}},
             "spec":{"serverClass":"{{{serverClass}}}","desired":{{{desired}}},"bidPrice":{{{bidValue}}},"cloudSpace":"{{{cloudspace}}}",
                     "autoscaling":{"enabled":false},"customLabels":{{{customLabels}}}}}
            """;
    }

    /// <summary>Another writer (the console, a script) changes a pool's size: Karpetrack itself never scales a pool.</summary>
    private static Task Scale(SpotApiServer server, string pool, int desired) =>
        RawAsync(server, "PATCH", $"{PoolsPath}/{pool}", $"{{\"spec\":{{\"desired\":{desired}}}}}", "application/merge-patch+json", expect: 200);

    private static async Task<(int Status, JsonObject Body)> RawAsync(SpotApiServer server, string method, string path, string? body = null,
        string contentType = "application/json", int? expect = null)
    {
        if (server.LastIssued is null)
        {
            using var warm = Client(server);
            await warm.GetOrgNamespaceAsync(default);
        }
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", server.LastIssued!.IdToken);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        }
        using var response = await http.SendAsync(request);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        if (expect is { } want) Assert.True((int)response.StatusCode == want, $"{method} {path}: {(int)response.StatusCode} {json.ToJsonString()}");
        return ((int)response.StatusCode, json);
    }

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
