using Microsoft.Extensions.Logging.Abstractions;
using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>
/// --consolidate-after and --consolidate-after-empty (issue 16, pool policy): a node must be removable continuously for
/// that long before the recommendation about it is actionable. The recommender loop tracks since when, on a hand-moved
/// clock; until then the recommendation is published, marked waiting, and the actuator leaves it alone.
/// </summary>
public class ConsolidateAfterTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 7, 8, 0, 0, TimeSpan.Zero);

    private static readonly PoolPolicy Waits = new() { ConsolidateAfter = TimeSpan.FromMinutes(30), ConsolidateAfterEmpty = TimeSpan.FromMinutes(5) };

    /// <summary>A full node that stays (do-not-disrupt) and an underused one whose pod fits on it.</summary>
    private static Scenario Underused() => new Scenario()
        .Node("big", "gp.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "2", "4Gi")
        .Node("small", "gp.vs1.large-iad").Pod("small-a", "small", "500m", "1Gi");

    private static RecommenderLoop Loop(Scenario s, ManualClock clock, PoolPolicy policy)
    {
        var synced = new ReflectorStatus("pods");
        synced.MarkSynced("1", T0);
        var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Book);
        return new RecommenderLoop(new(s.Model, prices, [synced]), new(() => new RecommenderOptions { Region = "us-east-iad-1", Pools = policy },
            TimeSpan.FromMinutes(1)), NullLogger.Instance, clock);
    }

    private static void DeletePod(Scenario s, string name) => s.Model.DeletePod(s.Model.Pods().Single(p => p.Name == name).Uid);

    private static Recommendation? About(Plan plan, string node) => plan.Recommendations.SingleOrDefault(r => r.Nodes.Contains(node));

    [Fact]
    public void TheWaitStartsResetsWhenTheNodeStopsBeingRemovableAndEndsInAnActionableRecommendation()
    {
        var s = Underused();
        var clock = new ManualClock(T0);
        var loop = Loop(s, clock, Waits);

        var first = About(loop.RunOnce(), "small")!;
        Assert.Equal(RecommendationType.Consolidate, first.Type);
        Assert.Equal(T0.AddMinutes(30), first.ActionableAt);
        Assert.Equal("waiting for consolidate-after (30m) until 2026-12-07T08:30:00Z", first.Waiting);
        Assert.Equal(first.Waiting, first.Reasons[^1]);
        Assert.True(first.WaitingAt(T0.AddMinutes(29)));

        clock.Advance(TimeSpan.FromSeconds(17 * 60 + 48));
        var later = About(loop.RunOnce(), "small")!;
        Assert.Equal(first.Id, later.Id);
        Assert.Equal(T0.AddMinutes(30), later.ActionableAt);          // measured from the first run that found it removable
        Assert.Equal(first.Waiting, later.Waiting);                   // the same text: a watch sees no change while it waits
        Assert.Equal(first.Reasons, later.Reasons);

        // A pod that must not be disrupted lands on it: no longer removable, and the node is forgotten.
        s.Pod("pinned", "small", "100m", "128Mi", annotations: """{"karpetrack.io/do-not-disrupt":"true"}""");
        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Null(About(loop.RunOnce(), "small"));
        Assert.False(loop.Waits.Since.ContainsKey("small"));

        // Removable again: the wait starts over.
        DeletePod(s, "pinned");
        clock.Advance(TimeSpan.FromMinutes(1));
        var restarted = About(loop.RunOnce(), "small")!;
        var again = clock.Now;
        Assert.Equal(again.AddMinutes(30), restarted.ActionableAt);

        clock.Advance(TimeSpan.FromMinutes(29));
        Assert.True(About(loop.RunOnce(), "small")!.WaitingAt(clock.Now));
        clock.Advance(TimeSpan.FromMinutes(1));
        var actionable = About(loop.RunOnce(), "small")!;
        Assert.Null(actionable.ActionableAt);
        Assert.Null(actionable.Waiting);
        Assert.False(actionable.WaitingAt(clock.Now));
        Assert.DoesNotContain(actionable.Reasons, r => r.StartsWith("waiting", StringComparison.Ordinal));
        Assert.Equal(first.Reasons.Count - 1, actionable.Reasons.Count);
    }

    [Fact]
    public void EmptyNodesWaitConsolidateAfterEmptyAndANodeThatTurnsEmptyOrBusyStartsOver()
    {
        var s = new Scenario()
            .Node("big", "gp.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "2", "4Gi")
            .Node("empty", "gp.vs1.xlarge-iad");
        var clock = new ManualClock(T0);
        var loop = Loop(s, clock, Waits);

        var rec = About(loop.RunOnce(), "empty")!;
        Assert.Equal(RecommendationType.DeleteEmpty, rec.Type);
        Assert.Equal(T0.AddMinutes(5), rec.ActionableAt);
        Assert.Equal("waiting for consolidate-after-empty (5m) until 2026-12-07T08:05:00Z", rec.Waiting);

        // A pod lands on it: a consolidation now, held to --consolidate-after from this run.
        clock.Advance(TimeSpan.FromMinutes(4));
        s.Pod("lands", "empty", "500m", "1Gi");
        var busy = About(loop.RunOnce(), "empty")!;
        Assert.Equal(RecommendationType.Consolidate, busy.Type);
        Assert.Equal(T0.AddMinutes(34), busy.ActionableAt);

        // Empty again: the empty wait starts over, and passes.
        clock.Advance(TimeSpan.FromMinutes(1));
        DeletePod(s, "lands");
        Assert.Equal(T0.AddMinutes(10), About(loop.RunOnce(), "empty")!.ActionableAt);
        clock.Advance(TimeSpan.FromMinutes(5));
        var done = About(loop.RunOnce(), "empty")!;
        Assert.Equal(RecommendationType.DeleteEmpty, done.Type);
        Assert.Null(done.ActionableAt);
    }

    [Fact]
    public void ANodeThatLeavesIsForgottenAndStartsOverWhenItComesBack()
    {
        var s = Underused();
        var clock = new ManualClock(T0);
        var loop = Loop(s, clock, Waits);
        loop.RunOnce();
        Assert.Equal(T0, loop.Waits.Since["small"]);
        clock.Advance(TimeSpan.FromMinutes(20));
        s.Model.DeleteNode("small");
        Assert.Null(About(loop.RunOnce(), "small"));
        Assert.False(loop.Waits.Since.ContainsKey("small"));
        clock.Advance(TimeSpan.FromMinutes(20));
        s.Node("small", "gp.vs1.large-iad");   // its pod is still bound to it
        Assert.Equal(clock.Now.AddMinutes(30), About(loop.RunOnce(), "small")!.ActionableAt);
    }

    [Fact]
    public void AtTheDefaultsNothingWaitsAndThePlanPassesThroughUnchanged()
    {
        var s = Underused().Node("empty", "gp.vs1.xlarge-iad");
        var plan = s.Run();
        Assert.Contains(plan.Recommendations, r => r.Type == RecommendationType.DeleteEmpty);
        Assert.Contains(plan.Recommendations, r => r.Type == RecommendationType.Consolidate);
        var waits = new ConsolidationWaits();
        Assert.Same(plan, waits.Apply(plan, PoolPolicy.None, T0));
        Assert.Same(plan, waits.Apply(plan, PoolPolicy.None, T0.AddDays(1)));
        var loop = Loop(s, new ManualClock(T0), PoolPolicy.None);
        Assert.All(loop.RunOnce().Recommendations, r => Assert.Null(r.ActionableAt));
    }

    [Theory]
    [InlineData(45, "45s")]
    [InlineData(60, "1m")]
    [InlineData(252, "4m12s")]
    [InlineData(251.2, "4m12s")]      // rounded up: never "0s left" while it still waits
    [InlineData(3600, "1h")]
    [InlineData(3900, "1h5m")]
    public void WaitsReadAsPeopleWriteThem(double seconds, string text) =>
        Assert.Equal(text, ConsolidationWaits.Duration(TimeSpan.FromSeconds(seconds)));

    [Fact]
    public void TheWaitIsCarriedOverGrpcAndJson()
    {
        var s = Underused();
        var loop = Loop(s, new ManualClock(T0), Waits);
        var rec = About(loop.RunOnce(), "small")!;
        var m = KarpetrackApi.ToMessage(rec);
        Assert.Equal(T0.AddMinutes(30), m.ActionableAt.ToDateTimeOffset());
        Assert.Equal("waiting for consolidate-after (30m) until 2026-12-07T08:30:00Z", m.Waiting);
        Assert.False(m.Expired);
        var json = Google.Protobuf.JsonFormatter.Default.Format(m);
        Assert.Contains("\"actionableAt\": \"2026-12-07T08:30:00Z\"", json);
        Assert.Contains("\"waiting\": \"waiting for consolidate-after (30m) until 2026-12-07T08:30:00Z\"", json);
        // Actionable: the fields are unset, and a reader of the old message sees nothing new.
        var plain = KarpetrackApi.ToMessage(Underused().Run().Recommendations.Single(r => r.Nodes.Contains("small")));
        Assert.Null(plain.ActionableAt);
        Assert.Equal("", plain.Waiting);
        Assert.DoesNotContain("waiting", Google.Protobuf.JsonFormatter.Default.Format(plain));
    }

    /// <summary>
    /// The actuator's selection: a recommendation still waiting is not started; once its time has come it is. On the rig's
    /// stepped clock (the actuator's and the fakes'), moved by hand.
    /// </summary>
    [Fact]
    public async Task TheActuatorDoesNotActOnAWaitingRecommendation()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var clock = rig.Clock!;
        var actuator = new Actuator(ActuationRig.Quick(), rig.Model, rig.Prices, rig.Statuses, NullLogger.Instance, rig.Kube, rig.SpotClient, clock);
        var cls = rig.Demo.ManagedNodes[0].ServerClass;
        var rec = new Recommendation("prov-waiting", RecommendationType.Provision, [], [new NewNode(cls, 1, 0)], [], ["default/p"], 0, 0, 0, 0, -1, ["a test plan"])
        {
            ActionableAt = clock.GetUtcNow().AddMinutes(5), Waiting = "waiting for consolidate-after (5m left)",
        };
        var plan = new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1");
        await actuator.TickAsync(CancellationToken.None);   // the recovery
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        await rig.AdvanceAsync(TimeSpan.FromMinutes(4));
        await actuator.TickAsync(CancellationToken.None);
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("create_pool", "succeeded")));
        await rig.AdvanceAsync(TimeSpan.FromMinutes(1));
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        Assert.NotNull(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
    }
}
