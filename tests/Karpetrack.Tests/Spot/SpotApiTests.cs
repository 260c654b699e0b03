using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Spot;

/// <summary>
/// A clock whose timers fire at once and move the clock forward by what was asked: waits in the
/// client (backoff, Retry-After, rate limit) take no real time but can be read back.
/// </summary>
internal sealed class SkippingClock : TimeProvider
{
    private readonly object gate = new();
    private DateTimeOffset now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly List<TimeSpan> slept = [];

    public override DateTimeOffset GetUtcNow() { lock (gate) return now; }

    public IReadOnlyList<TimeSpan> Slept { get { lock (gate) return [.. slept]; } }

    public void Advance(TimeSpan by) { lock (gate) now += by; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        lock (gate)
        {
            now += dueTime;
            slept.Add(dueTime);
        }
        Task.Run(() => callback(state));
        return new NoTimer();
    }

    private sealed class NoTimer : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => false;
        public void Dispose() { }
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}

public sealed class SpotApiTests
{
    private const string OrgId = "org_kNYILtp8ZZNvkZ5g";
    private const string OrgNamespace = "org-knyiltp8zznvkz5g";

    private static SpotApiClient Client(SpotApiServer server, TimeProvider? clock = null, Func<SpotApiOptions, SpotApiOptions>? tweak = null,
        string refreshToken = SpotApiServer.DemoRefreshToken)
    {
        var options = new SpotApiOptions
        {
            ApiUrl = server.BaseAddress, AuthUrl = server.BaseAddress,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
        };
        return new SpotApiClient(tweak is null ? options : tweak(options), refreshToken, NullLogger.Instance, clock);
    }

    private static long Count(SpotApiClient c, string method, string code) => c.Requests.GetValueOrDefault((method, code));

    [Fact]
    public async Task ExchangesTheRefreshTokenOnceAndSendsTheIdTokenNotTheAccessToken()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server);
        await client.ListServerClassesAsync(default);
        await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(1, server.TokenExchanges);
        var issued = server.LastIssued!;
        Assert.Equal("Bearer " + issued.IdToken, server.LastAuthorization);
        Assert.DoesNotContain(issued.AccessToken, server.LastAuthorization);
        Assert.Equal(1, Count(client, "POST", "200"));
        Assert.Equal(2, Count(client, "GET", "200"));

        // What the real gateway does with the opaque access_token, and with no token at all.
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var request = new HttpRequestMessage(HttpMethod.Get, "/apis/ngpc.rxt.io/v1/serverclasses");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", issued.AccessToken);
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Jwt is not in the form of Header.Payload.Signature", await response.Content.ReadAsStringAsync());
        using var anonymous = await http.GetAsync("/apis/ngpc.rxt.io/v1/serverclasses");
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
    }

    [Fact]
    public async Task AnIdTokenNearItsExpiryIsReplacedBeforeTheNextCall()
    {
        var clock = new ManualClock();
        await using var server = await SpotApiServer.StartAsync(new SpotApiServerOptions { Clock = clock, TokenLifetime = TimeSpan.FromHours(1) });
        using var client = Client(server, clock);
        await client.GetCloudspaceAsync("demo", default);
        clock.Advance(TimeSpan.FromMinutes(54));
        await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(1, server.TokenExchanges);
        clock.Advance(TimeSpan.FromMinutes(2));                 // 4 minutes left: inside the 5-minute margin
        await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(2, server.TokenExchanges);
        clock.Advance(TimeSpan.FromHours(2));                   // long past expiry: still no 401 round trip
        await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(3, server.TokenExchanges);
        Assert.Equal(0, Count(client, "GET", "401"));

        // A token that lives seconds (the margin is capped at half its life) is still used, not re-exchanged per call.
        await using var shortLived = await SpotApiServer.StartAsync(new SpotApiServerOptions { Clock = clock, TokenLifetime = TimeSpan.FromSeconds(20) });
        using var c2 = Client(shortLived, clock);
        await c2.GetCloudspaceAsync("demo", default);
        clock.Advance(TimeSpan.FromSeconds(5));
        await c2.GetCloudspaceAsync("demo", default);
        Assert.Equal(1, shortLived.TokenExchanges);
        clock.Advance(TimeSpan.FromSeconds(6));
        await c2.GetCloudspaceAsync("demo", default);
        Assert.Equal(2, shortLived.TokenExchanges);
    }

    [Fact]
    public async Task A401LeadsToExactlyOneReExchangeAndTheCallSucceeds()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server);
        await client.GetCloudspaceAsync("demo", default);
        server.RevokeIssuedTokens();
        var cs = await client.GetCloudspaceAsync("demo", default);
        Assert.Equal("us-east-iad-1", cs.Region);
        Assert.Equal(2, server.TokenExchanges);
        Assert.Equal(1, Count(client, "GET", "401"));

        // A token that is refused again right after the re-exchange: no loop, the 401 surfaces.
        server.FailNext(2, 401, pathContains: "cloudspaces");
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.GetCloudspaceAsync("demo", default));
        Assert.Equal("unauthorized", e.Reason);
        Assert.Equal(3, server.TokenExchanges);
    }

    [Fact]
    public async Task ARefusedRefreshTokenIsUnauthorizedWithTheServersMessage()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, refreshToken: "not-the-token");
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.Equal("unauthorized", e.Reason);
        Assert.Equal(403, e.StatusCode);
        Assert.Equal("Unknown or invalid refresh token.", e.ServerMessage);
        Assert.DoesNotContain("not-the-token", e.Message);
        Assert.Equal(1, server.RequestsTo("/oauth/token"));   // a refusal is not retried
    }

    [Fact]
    public async Task A429IsRetriedAfterTheServersRetryAfter()
    {
        var clock = new SkippingClock();
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, clock, o => o with { RatePerSecond = 0 });
        server.FailNext(1, 429, TimeSpan.FromSeconds(3), "serverclasses");
        var list = await client.ListServerClassesAsync(default);
        Assert.NotEmpty(list.Items);
        Assert.Equal([TimeSpan.FromSeconds(3)], clock.Slept);
        Assert.Equal(1, Count(client, "GET", "429"));
        Assert.Equal(1, Count(client, "GET", "200"));

        // Asked to wait longer than we are willing to inside one call: give up, say so.
        server.FailNext(1, 429, TimeSpan.FromMinutes(10), "serverclasses");
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.Equal("throttled", e.Reason);
        Assert.Equal(TimeSpan.FromMinutes(10), e.RetryAfter);
    }

    [Fact]
    public async Task ServerErrorsAreRetriedWithGrowingBackoffThenSucceed()
    {
        var clock = new SkippingClock();
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, clock, o => o with { RatePerSecond = 0, BackoffBase = TimeSpan.FromSeconds(1), BackoffMax = TimeSpan.FromSeconds(30) });
        server.FailNext(2, 503, pathContains: "serverclasses");
        var list = await client.ListServerClassesAsync(default);
        Assert.NotEmpty(list.Items);
        Assert.Equal(2, Count(client, "GET", "503"));
        var sleeps = clock.Slept;
        Assert.Equal(2, sleeps.Count);
        Assert.InRange(sleeps[0], TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1));   // half fixed, half jitter
        Assert.InRange(sleeps[1], TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2));
        Assert.False(client.CircuitOpen);
    }

    [Fact]
    public async Task PersistentServerErrorsOpenTheCircuitWhichHalfOpensAfterTheCooldownAndClosesOnSuccess()
    {
        var clock = new SkippingClock();
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, clock, o => o with { RatePerSecond = 0, MaxAttempts = 4, BreakerThreshold = 5, BreakerCooldown = TimeSpan.FromSeconds(30) });
        server.FailNext(1000, 500, pathContains: "serverclasses");
        const string path = "/apis/ngpc.rxt.io/v1/serverclasses";

        var first = await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.Equal("http", first.Reason);
        Assert.Equal(500, first.StatusCode);
        Assert.Equal("Internal error occurred: injected fault", first.ServerMessage);
        Assert.Equal(4, server.RequestsTo(path));
        Assert.False(client.CircuitOpen);

        var second = await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.Equal(500, second.StatusCode);                  // the fifth failure opens it; the real error is reported
        Assert.Equal(5, server.RequestsTo(path));
        Assert.True(client.CircuitOpen);

        var third = await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.Equal("circuit_open", third.Reason);
        Assert.Equal(5, server.RequestsTo(path));              // not sent

        server.ClearFaults();
        clock.Advance(TimeSpan.FromSeconds(30));
        var list = await client.ListServerClassesAsync(default);
        Assert.NotEmpty(list.Items);
        Assert.False(client.CircuitOpen);
        Assert.Equal(1, client.CircuitOpenings);
        Assert.Equal(5, Count(client, "GET", "500"));

        // A failed trial re-opens it for another cool-down.
        server.FailNext(1000, 502, pathContains: "serverclasses");
        for (int i = 0; i < 2; i++) await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.True(client.CircuitOpen);
        clock.Advance(TimeSpan.FromSeconds(30));
        await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.True(client.CircuitOpen);
        Assert.Equal("circuit_open", (await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default))).Reason);
    }

    [Fact]
    public async Task AHalfOpenTrialCancelledByTheCallerDoesNotWedgeTheCircuit()
    {
        var clock = new SkippingClock();
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, clock, o => o with { RatePerSecond = 0, MaxAttempts = 1, BreakerThreshold = 2 });
        server.FailNext(2, 500, pathContains: "serverclasses");
        for (int i = 0; i < 2; i++) await Assert.ThrowsAsync<SpotApiException>(() => client.ListServerClassesAsync(default));
        Assert.True(client.CircuitOpen);
        clock.Advance(TimeSpan.FromSeconds(30));
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.ListServerClassesAsync(cancelled.Token));
        Assert.NotEmpty((await client.ListServerClassesAsync(default)).Items);
        Assert.False(client.CircuitOpen);
    }

    [Fact]
    public async Task ASlowServerTimesOut()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, tweak: o => o with { RequestTimeout = TimeSpan.FromMilliseconds(300), MaxAttempts = 2 });
        await client.GetCloudspaceAsync("demo", default);       // token and org in hand
        // The server would answer only after ten minutes: each attempt is ended by the client's request
        // timeout (the deadline here is only how long the test waits for that before it fails).
        server.Delay = TimeSpan.FromMinutes(10);
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.GetCloudspaceAsync("demo", default).WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal("timeout", e.Reason);
        Assert.Null(e.StatusCode);
        Assert.Equal(2, Count(client, "GET", "error"));
    }

    [Theory]
    [InlineData(OrgId)]
    [InlineData(OrgNamespace)]
    [InlineData("ORG_kNYILtp8ZZNvkZ5g")]
    public async Task TheOrgFlagIsTakenInEitherForm(string org)
    {
        await using var server = await SpotApiServer.StartAsync(new SpotApiServerOptions { OrgIdClaim = false });
        using var client = Client(server, tweak: o => o with { Org = org });
        Assert.Equal(OrgNamespace, await client.GetOrgNamespaceAsync(default));
        Assert.Equal("flag", client.OrgSource);
        Assert.Equal(0, server.RequestsTo("/apis/auth.ngpc.rxt.io/v1/organizations"));
    }

    [Fact]
    public async Task WithoutTheFlagTheOrgComesFromTheIdTokenClaim()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server);
        Assert.Equal(OrgNamespace, await client.GetOrgNamespaceAsync(default));
        Assert.Equal("token", client.OrgSource);
        Assert.Equal(0, server.RequestsTo("/apis/auth.ngpc.rxt.io/v1/organizations"));
    }

    [Fact]
    public async Task WithoutFlagOrClaimTheOrgIsListedOnceAndCached()
    {
        await using var server = await SpotApiServer.StartAsync(new SpotApiServerOptions { OrgIdClaim = false });
        using var client = Client(server);
        for (int i = 0; i < 3; i++) await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(OrgNamespace, await client.GetOrgNamespaceAsync(default));
        Assert.Equal("organizations", client.OrgSource);
        Assert.Equal(1, server.RequestsTo("/apis/auth.ngpc.rxt.io/v1/organizations"));
    }

    [Fact]
    public async Task SeveralOrgsNeedAChoiceAndAnotherOrgsNamespaceIsForbidden()
    {
        var orgs = new[] { new SpotApiOrg(OrgId, "mine", "Mine"), new SpotApiOrg("org_Other123", "theirs", "Theirs") };
        await using var server = await SpotApiServer.StartAsync(new SpotApiServerOptions { OrgIdClaim = false, Organizations = orgs });
        using var unsure = Client(server);
        var e = await Assert.ThrowsAsync<SpotApiException>(() => unsure.GetOrgNamespaceAsync(default));
        Assert.Equal("config", e.Reason);
        Assert.Contains("--spot-org", e.Message);

        using var byName = Client(server, tweak: o => o with { Org = "mine" });
        Assert.Equal(OrgNamespace, await byName.GetOrgNamespaceAsync(default));

        using var other = Client(server, tweak: o => o with { Org = "org_Other123" });
        var denied = await Assert.ThrowsAsync<SpotApiException>(() => other.GetCloudspaceAsync("demo", default));
        Assert.Equal("access_denied", denied.Reason);
        Assert.Equal(403, denied.StatusCode);
        Assert.Contains("in the namespace \"org-other123\"", denied.ServerMessage);
    }

    [Fact]
    public async Task ReadsTheCloudspaceRegionAndReportsAMissingOne()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server);
        var cs = await client.GetCloudspaceAsync("demo", default);
        Assert.Equal(("demo", OrgNamespace, "us-east-iad-1", "Ready"), (cs.Name, cs.Namespace, cs.Region, cs.Phase));
        var e = await Assert.ThrowsAsync<SpotApiException>(() => client.GetCloudspaceAsync("nope", default));
        Assert.Equal(("not_found", 404), (e.Reason, e.StatusCode));
        Assert.Equal("cloudspaces.ngpc.rxt.io \"nope\" not found", e.ServerMessage);
    }

    [Fact]
    public async Task ServerClassesBecomeFactsAndMalformedItemsAreSkipped()
    {
        await using var server = await SpotApiServer.StartAsync();
        server.EditServerClasses(items =>
        {
            var bad = (JsonObject)items.First(i => (string?)i["metadata"]!["name"] == "gp.vs1.large-iad").DeepClone();
            bad["metadata"]!["name"] = "bad.price-iad";
            bad["spec"]!["minBidPricePerHour"] = "cheap";
            items.Add(bad);
            items.Add(new JsonObject { ["metadata"] = new JsonObject { ["name"] = "no.spec-iad" } });
            var noDisk = (JsonObject)items.First(i => (string?)i["metadata"]!["name"] == "ch.vs1.large-iad");
            noDisk["spec"]!["resources"]!.AsObject().Remove("disk");
            noDisk["spec"]!["onDemandPricing"] = new JsonObject { ["cost"] = "21.6", ["interval"] = "720h" };
        });
        using var client = Client(server);
        var list = await client.ListServerClassesAsync(default);
        Assert.Equal(2, list.Skipped);
        var byName = list.Items.ToDictionary(c => c.Name);
        Assert.DoesNotContain("bad.price-iad", byName.Keys);

        var medium = byName["gp.vs1.medium-iad"];
        Assert.Equal("us-east-iad-1", medium.Region);
        Assert.Equal(0.01m, medium.MinBid);
        Assert.Equal(0.019m, medium.OnDemandPerHour);
        Assert.Equal(100_000_000_000L, medium.DiskBytes);
        Assert.Equal(3_750_000_000L, medium.MemoryBytes);
        Assert.Equal(2m, medium.Cpu);
        Assert.Equal("available", medium.Availability);
        Assert.Equal(0.001m, medium.Market);
        var facts = medium.ToFacts();
        Assert.Equal((0.01m, 0.019m, 100_000_000_000L, "available"), (facts.MinBid, facts.OnDemand, facts.DiskBytes, facts.Availability));
        Assert.Equal("gp", facts.Class!.Category);

        var bareMetal = byName["io.bm2-iad"];
        Assert.Null(bareMetal.MinBid);
        Assert.Null(bareMetal.ToFacts().MinBid);

        var perMonth = byName["ch.vs1.large-iad"];
        Assert.Null(perMonth.DiskBytes);
        Assert.Equal(0.03m, perMonth.OnDemandPerHour);          // 21.6 per 720h
    }

    [Fact]
    public async Task SpotPricingMergesFactsSoSpotNodesCostAtLeastTheMinimumBidAndKeepsThemOnFailure()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, tweak: o => o with { MaxAttempts = 1 });
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: PriceFeedParser.Parse(
            FeedServer.EmbeddedSnapshots()[^1].Body, DateTimeOffset.UtcNow, "test"));
        var before = prices.Current;
        Assert.Equal(0.001m, before.NodePrice("gp.vs1.medium-iad", "spot"));
        Assert.Null(before.NodePrice("gp.vs1.medium-iad", "ondemand"));

        var pricing = new SpotPricing(client, prices, NullLogger.Instance, cloudspace: "demo");
        Assert.True(await pricing.RefreshAsync(default));
        Assert.Equal("us-east-iad-1", pricing.Region);
        var book = prices.Current;
        Assert.Equal(0.01m, book.NodePrice("gp.vs1.medium-iad", "spot"));       // min bid 0.01 > market 0.001
        Assert.Equal(0.02m, book.NodePrice("mh.vs1.2xlarge-iad", "spot"));      // market 0.02 > min bid 0.01
        Assert.Equal(0.005m, book.NodePrice("io.bm2-iad", "spot"));             // no min bid: the market
        Assert.Equal(0.019m, book.NodePrice("gp.vs1.medium-iad", "ondemand"));
        Assert.Equal(100_000_000_000L, book.Classes["gp.vs1.medium-iad"].Prices.DiskBytes);
        Assert.True(prices.LastSuccess.ContainsKey("spot_api"));

        server.FailNext(1, 503, pathContains: "serverclasses");
        Assert.False(await pricing.RefreshAsync(default));
        Assert.Equal(1, prices.Errors.GetValueOrDefault(("spot_api", "http")));
        Assert.Equal(0.01m, prices.Current.NodePrice("gp.vs1.medium-iad", "spot"));   // last facts kept

        server.RevokeIssuedTokens();
        server.FailNext(1, 403, pathContains: "oauth");
        Assert.False(await pricing.RefreshAsync(default));
        Assert.Equal(1, prices.Errors.GetValueOrDefault(("spot_api", "unauthorized")));
        Assert.Contains("unauthorized", PriceFeed.ErrorReasons);
    }

    [Fact]
    public async Task TheRateLimiterSpacesABurst()
    {
        var clock = new SkippingClock();
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, clock, o => o with { RatePerSecond = 10, Burst = 2, Org = OrgId });
        for (int i = 0; i < 6; i++) await client.ListServerClassesAsync(default);
        // 7 requests (the token exchange too): 2 from the burst, then one every 100 ms.
        var sleeps = clock.Slept;
        Assert.Equal(5, sleeps.Count);
        Assert.All(sleeps, s => Assert.InRange(s.TotalMilliseconds, 99, 101));
        Assert.Equal(7, Count(client, "GET", "200") + Count(client, "POST", "200"));
    }

    [Fact]
    public async Task ConcurrentCallsShareOneTokenExchange()
    {
        await using var server = await SpotApiServer.StartAsync();
        using var client = Client(server, tweak: o => o with { Org = OrgId, RatePerSecond = 0 });
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => client.GetCloudspaceAsync("demo", default)));
        Assert.Equal(1, server.TokenExchanges);
        server.RevokeIssuedTokens();
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => client.GetCloudspaceAsync("demo", default)));
        Assert.Equal(2, server.TokenExchanges);
    }
}
