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

namespace Karpetrack.Tests.Spot;

public sealed class SpotPoolTests
{
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
}
