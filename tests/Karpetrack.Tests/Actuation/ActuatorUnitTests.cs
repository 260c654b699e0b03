using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

public class ActuatorUnitTests
{
    /// <summary>The real snapshot, as if just read from the feed: not stale.</summary>
    private static PriceBook Fresh() =>
        PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "test");

    [Theory]
    [InlineData("0.001", "0.01")]
    [InlineData("0.01", "0.01")]
    [InlineData("0.011", "0.02")]
    [InlineData("0.035", "0.04")]
    [InlineData("0.041", "0.06")]
    [InlineData("0.086", "0.10")]
    [InlineData("0.101", "0.13")]
    [InlineData("0.19", "0.19")]
    [InlineData("0.195", "0.22")]
    [InlineData("0.23", "0.27")]
    [InlineData("2.69", "2.72")]
    public void BidsRoundUpOntoTheLadder(string price, string bid)
    {
        var rounded = BidLadder.RoundUp(decimal.Parse(price, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(decimal.Parse(bid, System.Globalization.CultureInfo.InvariantCulture), rounded);
        Assert.True(BidLadder.IsOnLadder(rounded));
        Assert.True(decimal.Round(rounded, 3) == rounded);   // the API takes at most three decimals
    }

    [Fact]
    public void OffLadderValuesAreRecognised()
    {
        Assert.False(BidLadder.IsOnLadder(0.05m));
        Assert.False(BidLadder.IsOnLadder(0.005m));
        Assert.True(BidLadder.IsOnLadder(0.06m));
    }

    [Fact]
    public void TheBidPolicyTakesTheHighestFloorTimesTheMarginAndRespectsTheCap()
    {
        var prices = new ClassPrices(Market: 0.001m, P20: 0.006m, P50: 0.016m, P80: 0.021m, MinBid: 0.01m);
        Assert.Equal(0.02m, new BidPolicy().Bid(prices));                              // p50 0.016 × 1.05 = 0.0168 → 0.02
        Assert.Equal(0.03m, new BidPolicy { Percentile = "p80" }.Bid(prices));         // 0.02205 → 0.03
        Assert.Equal(0.02m, new BidPolicy { Percentile = "market" }.Bid(prices));      // min bid 0.01 × 1.05 → 0.02
        Assert.Null(new BidPolicy { Cap = 0.015m }.Bid(prices));
    }

    [Fact]
    public void PoolNamesAreDeterministicLowercaseUuids()
    {
        var a = Actuator.PoolName("pro-0123456789ab", 0);
        Assert.Equal(a, Actuator.PoolName("pro-0123456789ab", 0));
        Assert.NotEqual(a, Actuator.PoolName("pro-0123456789ab", 1));
        Assert.Matches("^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", a);
    }

    private static (Scenario S, Plan Plan) ManagedAndUnmanaged()
    {
        var managed = new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" };
        var s = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("k", "keep", "1", "1Gi")
            .Node("mine", "gp.vs1.xlarge-iad", labels: managed).Pod("m", "mine", "500m", "1Gi")
            .Node("theirs", "gp.vs1.xlarge-iad").Pod("t", "theirs", "500m", "1Gi")
            .Pod("pend", null, "14", "60Gi", pending: true);
        return (s, s.Run());
    }

    [Fact]
    public void OnlyKarpetracksOwnNodesGetStepsOthersStayAdvisory()
    {
        var (s, plan) = ManagedAndUnmanaged();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Fresh());
        var actuator = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [], NullLogger.Instance);
        var snap = s.Model.Snapshot();

        var removals = plan.Recommendations.Where(r => r.Nodes.Count > 0).ToList();
        Assert.NotEmpty(removals);
        foreach (var r in removals)
        {
            var a = actuator.PlanFor(r, snap, Scenario.Book);
            if (r.Nodes.Contains("theirs")) { Assert.True(a.IsAdvisory); Assert.Contains("theirs", a.Advisory); }
            else
            {
                Assert.False(a.IsAdvisory);
                Assert.Equal(ActionKind.Cordon, a.Steps.First(x => x.Kind != ActionKind.CreatePool && x.Kind != ActionKind.WaitReady).Kind);
                Assert.Equal("pool-mine", a.Steps.Last().Target);
                Assert.Equal(ActionKind.DeletePool, a.Steps.Last().Kind);
                if (r.Moves.Count > 0) Assert.Contains(a.Steps, x => x.Kind == ActionKind.Drain && x.Detail.Contains($"evict {r.Moves.Count} pods"));
            }
        }

        var provision = plan.Recommendations.Single(r => r.Type == RecommendationType.Provision);
        var p = actuator.PlanFor(provision, snap, Scenario.Book);
        Assert.False(p.IsAdvisory);
        Assert.Equal(provision.NewNodes.Sum(n => n.Count), p.Steps.Count(x => x.Kind == ActionKind.CreatePool));
        Assert.All(p.Steps.Where(x => x.Kind == ActionKind.CreatePool), x => Assert.Contains("desired 1, bid ", x.Detail));
        Assert.Equal(ActionKind.WaitReady, p.Steps[^1].Kind);
    }

    [Fact]
    public void DryRunCountsEveryWouldBeStepOnceAndChangesNothing()
    {
        var (s, plan) = ManagedAndUnmanaged();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Fresh());
        var synced = new ReflectorStatus("nodes");
        synced.MarkSynced("1", DateTimeOffset.UtcNow);
        var before = s.Model.Snapshot().Version;
        var actuator = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [synced], NullLogger.Instance);
        actuator.OnPlan(plan);
        actuator.OnPlan(plan);                                         // the same plan again counts nothing new
        var counts = actuator.Counts;
        Assert.True(counts.GetValueOrDefault(("create_pool", "dry_run")) >= 1);
        Assert.Equal(0, counts.Where(kv => kv.Key.Result != "dry_run").Sum(kv => kv.Value));
        var provision = plan.Recommendations.Single(r => r.Type == RecommendationType.Provision);
        Assert.StartsWith("dry_run: would create_pool", actuator.StateOf(provision.Id));
        Assert.Equal(before, s.Model.Snapshot().Version);
    }

    [Fact]
    public void DryRunSaysARecommendationIsWaitingAndUntilWhenInsteadOfWhatItWouldDo()
    {
        var (s, plan) = ManagedAndUnmanaged();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Fresh());
        var synced = new ReflectorStatus("nodes");
        synced.MarkSynced("1", DateTimeOffset.UtcNow);
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var actuator = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [synced], NullLogger.Instance, clock: clock);
        var removal = plan.Recommendations.First(r => r.Nodes.SequenceEqual(["mine"]));
        var at = clock.Now.AddMinutes(30);
        var until = at.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
        // As the recommender marks it while its node has not been removable for --consolidate-after.
        var waiting = removal with { ActionableAt = at, Waiting = $"waiting for consolidate-after (30m) until {until}" };
        var marked = plan with { Recommendations = [.. plan.Recommendations.Select(r => r.Id == removal.Id ? waiting : r)] };

        actuator.OnPlan(marked);
        Assert.Equal($"dry_run: waiting for consolidate-after (30m) until {until}; nothing would be done before then", actuator.StateOf(removal.Id));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "dry_run")));
        // Still waiting a minute before the end: the same.
        clock.Advance(TimeSpan.FromMinutes(29));
        actuator.OnPlan(marked);
        Assert.StartsWith("dry_run: waiting for consolidate-after (30m) until ", actuator.StateOf(removal.Id));
        Assert.DoesNotContain("would cordon", actuator.StateOf(removal.Id));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "dry_run")));

        // The wait is over: now it says what it would do, once.
        clock.Advance(TimeSpan.FromMinutes(1));
        actuator.OnPlan(marked);
        actuator.OnPlan(marked);
        Assert.StartsWith("dry_run: would cordon mine", actuator.StateOf(removal.Id));
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "dry_run")));
    }

    [Fact]
    public void NothingHappensWhenOffOrRefusedWhileCachesAreNotSynced()
    {
        var (s, plan) = ManagedAndUnmanaged();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Fresh());
        var off = new Actuator(new ActuationOptions { Mode = ActuationMode.Off }, s.Model, prices, [], NullLogger.Instance);
        off.OnPlan(plan);
        Assert.Empty(off.Counts);
        var unsynced = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [new ReflectorStatus("pods")], NullLogger.Instance);
        unsynced.OnPlan(plan);
        Assert.True(unsynced.Counts.GetValueOrDefault(("create_pool", "refused")) >= 1);
        Assert.StartsWith("refused: the caches have not synced", unsynced.StateOf(plan.Recommendations.Single(r => r.Type == RecommendationType.Provision).Id));
    }

    /// <summary>
    /// Issue 16 defect 9: a cache that synced once and then lost its watch is frozen, not synced. Past the limit with no watch
    /// open the actuator refuses every action (caches_stale), dry-run included; at the limit it still acts. Red with the
    /// actuator's world not reading the caches' touch (StaleCaches left empty).
    /// </summary>
    [Fact]
    public void ACacheOutOfTouchPastTheLimitIsRefusedAsStale()
    {
        var (s, plan) = ManagedAndUnmanaged();
        var provision = plan.Recommendations.Single(r => r.Type == RecommendationType.Provision);
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Fresh());
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        var pods = new ReflectorStatus("pods", clock: clock);
        pods.MarkSynced("1", clock.Now);
        pods.Restarted("network_error");
        clock.Advance(ActuationOptions.CacheOutOfTouchLimit);
        var atTheLimit = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [pods], NullLogger.Instance, clock: clock);
        atTheLimit.OnPlan(plan);
        Assert.StartsWith("dry_run: would create_pool", atTheLimit.StateOf(provision.Id));
        Assert.Empty(atTheLimit.Refusals);

        clock.Advance(TimeSpan.FromSeconds(1));
        var past = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, s.Model, prices, [pods], NullLogger.Instance, clock: clock);
        past.OnPlan(plan);
        Assert.Equal("refused: the pods cache has had no watch for over 120 s", past.StateOf(provision.Id));
        Assert.True(past.Counts.GetValueOrDefault(("create_pool", "refused")) >= 1);
        Assert.Equal(0, past.Counts.Where(kv => kv.Key.Result == "dry_run").Sum(kv => kv.Value));
    }

    [Fact]
    public void ApproveNeedsATokenFileThatExists()
    {
        Assert.Contains("--approve-token-file", Assert.Throws<OptionsException>(() => KarpetrackOptions.Parse(["--actuation", "approve"], _ => null)).Message);
        Assert.Contains("not found", Assert.Throws<OptionsException>(() =>
            KarpetrackOptions.Parse(["--actuation", "approve", "--approve-token-file", "/nonexistent/token"], _ => null)).Message);
        var file = Path.GetTempFileName();
        try
        {
            var o = KarpetrackOptions.Parse(["--actuation", "approve", "--approve-token-file", file], _ => null);
            Assert.Equal(ActuationMode.Approve, o.ActuationSettings.Mode);
            Assert.Equal(file, o.ActuationSettings.ApproveTokenFile);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void ActuationFlagsParseAndBadValuesAreNamed()
    {
        var o = KarpetrackOptions.Parse(["--actuation", "auto", "--max-disrupted-nodes", "3", "--drain-timeout", "90s", "--maintenance-window", "22:00-04:00",
            "--bid-percentile", "p80", "--bid-margin", "1.2", "--max-price", "0.5", "--leader-elect"], _ => null);
        var a = o.ActuationSettings;
        Assert.Equal(ActuationMode.Auto, a.Mode);
        Assert.Equal(3, a.MaxDisruptedNodes);
        Assert.Equal(TimeSpan.FromSeconds(90), a.DrainTimeout);
        Assert.Equal(TimeSpan.FromMinutes(60), a.ProvisioningTimeout);
        Assert.Equal("p80", a.Bids.Percentile);
        Assert.Equal(1.2m, a.Bids.Margin);
        Assert.Equal(0.5m, a.Bids.Cap);
        Assert.True(o.LeaderElect);
        Assert.True(a.Window!.Contains(new DateTimeOffset(2026, 1, 1, 23, 0, 0, TimeSpan.Zero)));
        Assert.True(a.Window.Contains(new DateTimeOffset(2026, 1, 1, 3, 59, 0, TimeSpan.Zero)));
        Assert.False(a.Window.Contains(new DateTimeOffset(2026, 1, 1, 4, 0, 0, TimeSpan.Zero)));
        Assert.False(a.Window.Contains(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero)));
        Assert.Contains("--maintenance-window", Assert.Throws<OptionsException>(() => KarpetrackOptions.Parse(["--maintenance-window", "2am"], _ => null)).Message);
        Assert.Contains("--bid-percentile", Assert.Throws<OptionsException>(() => KarpetrackOptions.Parse(["--bid-percentile", "p99"], _ => null)).Message);
        Assert.Contains("--max-disrupted-nodes", Assert.Throws<OptionsException>(() => KarpetrackOptions.Parse(["--max-disrupted-nodes", "0"], _ => null)).Message);
        var spot = KarpetrackOptions.Parse(["--spot-api-rate", "0.5", "--spot-api-timeout", "5s", "--spot-api-attempts", "2", "--spot-api-breaker-cooldown", "1m"], _ => null).SpotApi;
        Assert.Equal(0.5, spot.RatePerSecond);
        Assert.Equal(TimeSpan.FromSeconds(5), spot.RequestTimeout);
        Assert.Equal(2, spot.MaxAttempts);
        Assert.Equal(TimeSpan.FromMinutes(1), spot.BreakerCooldown);
        Assert.Contains("--spot-api-timeout", Assert.Throws<OptionsException>(() => KarpetrackOptions.Parse(["--spot-api-timeout", "0"], _ => null)).Message);
        // The demo compresses time: shorter defaults there, the flag still wins.
        Assert.Equal(TimeSpan.FromSeconds(30), KarpetrackOptions.Parse(["--demo"], _ => null).ActuationSettings.ScaleUpCooldown);
        Assert.Equal(TimeSpan.FromMinutes(2), KarpetrackOptions.Parse([], _ => null).ActuationSettings.ScaleUpCooldown);
        Assert.Equal(TimeSpan.FromSeconds(5), KarpetrackOptions.Parse(["--demo", "--scale-up-cooldown", "5s"], _ => null).ActuationSettings.ScaleUpCooldown);
    }

    [Fact]
    public void ApprovalTokensCompareExactly()
    {
        Assert.True(Actuator.TokenMatches("s3cret", "s3cret"));
        Assert.False(Actuator.TokenMatches("s3cret ", "s3cret"));
        Assert.False(Actuator.TokenMatches("", ""));          // an empty mounted token approves nothing
        Assert.False(Actuator.TokenMatches("S3cret", "s3cret"));
    }

    /// <summary>The metric keeps its series: each reason has its own snake_case label, the ones of earlier releases unchanged.</summary>
    [Fact]
    public void EveryRefusalReasonHasItsOwnStableLabel()
    {
        var labels = Enum.GetValues<RefusalReason>().Select(Refusal.LabelOf).ToList();
        Assert.Equal(labels.Count, labels.Distinct().Count());
        Assert.All(labels, l => Assert.Matches("^[a-z]+(_[a-z]+)*$", l));
        Assert.DoesNotContain("node_not_ready_or_other", labels);
        foreach (var legacy in new[] { "caches_unsynced", "price_book_stale", "circuit_open", "plan_too_old", "outside_window", "scale_up_cooldown",
                     "max_disrupted_nodes", "hourly_budget", "pool_deleting", "owned_by_operation", "node_too_young", "blocked", "node_gone",
                     "saves_nothing", "pool_holds_other_nodes", "managed_capacity_limit", "saving_below_threshold", "no_price", "pods_not_evicted" })
            Assert.Contains(legacy, labels);
    }

    [Fact]
    public void DryRunParses() =>
        Assert.Equal(ActuationMode.DryRun, KarpetrackOptions.Parse(["--actuation", "dry-run"], _ => null).Actuation);
}
