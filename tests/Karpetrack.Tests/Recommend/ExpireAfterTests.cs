using Microsoft.Extensions.Logging.Abstractions;
using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>
/// --expire-after (issue 16, pool policy): a managed node older than the limit gets a replacement with the reason
/// 'expired' even when no cheaper class exists, by the cheapest new nodes its pods fit on, within the pool labels and
/// taints and the managed capacity limits, and subject to the same blockers as any replacement.
/// </summary>
public class ExpireAfterTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 7, 8, 0, 0, TimeSpan.Zero);
    private static readonly Dictionary<string, string> Managed = new() { [Actuator.ManagedLabel] = "true" };

    private static RecommenderOptions Options(PoolPolicy? pools = null) =>
        new() { Region = "us-east-iad-1", Pools = pools ?? new PoolPolicy { ExpireAfter = TimeSpan.FromDays(7) } };

    /// <summary>One node of the cheapest class its 5-core pod fits (so nothing cheaper exists) and nowhere else to go.</summary>
    private static Scenario Alone(int ageDays, bool managed = true, string podAnnotations = "{}", string extraSpec = "") => new Scenario()
        .Node("old", "ch.vs1.xlarge-iad", labels: managed ? Managed : null, created: Now.AddDays(-ageDays))
        .Pod("work", "old", "5", "2Gi", annotations: podAnnotations, extraSpec: extraSpec);

    [Fact]
    public void AnExpiredManagedNodeIsReplacedThoughNothingCheaperExists()
    {
        // Without --expire-after, or not yet expired: nothing to do.
        Assert.DoesNotContain(Alone(8).Run(Options(PoolPolicy.None), now: Now).Recommendations, r => r.Nodes.Contains("old"));
        Assert.DoesNotContain(Alone(6).Run(Options(), now: Now).Recommendations, r => r.Nodes.Contains("old"));
        Assert.DoesNotContain(Alone(8).Run(Options()).Recommendations, r => r.Nodes.Contains("old"));   // no time given: nothing expires

        var plan = Alone(8).Run(Options(), now: Now);
        var rec = Single(plan, RecommendationType.Replace);
        Assert.Equal(["old"], rec.Nodes);
        Assert.True(rec.Expired);
        Assert.Equal("expired: old joined 2026-11-29T08:00:00Z, more than --expire-after 168h ago", rec.Reasons[0]);
        // An hour later the reason reads the same: a gRPC watch of the plan sees no change while the node waits to go.
        Assert.Equal(rec.Reasons[0], Single(Alone(8).Run(Options(), now: Now.AddHours(1)), RecommendationType.Replace).Reasons[0]);
        Assert.Contains(rec.Reasons, r => r.EndsWith("replaced because it expired", StringComparison.Ordinal));
        var added = Assert.Single(rec.NewNodes);
        Assert.Equal(1, added.Count);
        // The cheapest class the pod fits: the one it is on (0.005 $/h), so the replacement saves nothing.
        Assert.Equal("ch.vs1.xlarge-iad", added.ServerClass);
        Assert.Equal(0, rec.SavingsPerHour);
        Assert.Equal("work", Assert.Single(rec.Moves).Pod);
        Assert.False(plan.Blockers.ContainsKey("old"));
    }

    [Fact]
    public void OnlyManagedNodesExpire() =>
        Assert.DoesNotContain(Alone(30, managed: false).Run(Options(), now: Now).Recommendations, r => r.Nodes.Contains("old"));

    [Fact]
    public void AnExpiredNodeThatMustNotBeDisruptedIsNotReplaced()
    {
        var plan = Alone(30, podAnnotations: """{"karpetrack.io/do-not-disrupt":"true"}""").Run(Options(), now: Now);
        Assert.DoesNotContain(plan.Recommendations, r => r.Nodes.Contains("old"));
        Assert.Contains(plan.Blockers["old"], b => b.Reason == BlockerReasons.PodDoNotDisrupt);
        var pdb = Alone(30).Pdb("shop", "zero", "app", 0).Run(Options(), now: Now);
        Assert.DoesNotContain(pdb.Recommendations, r => r.Nodes.Contains("old"));
        Assert.Contains(pdb.Blockers["old"], b => b.Reason == BlockerReasons.PdbNoDisruptions);
    }

    [Fact]
    public void TheReplacementStaysWithinTheManagedLimitsAndThePoolTaints()
    {
        var expire = TimeSpan.FromDays(7);
        var managed = ManagedCapacity.Of(Book.Classes["ch.vs1.xlarge-iad"].Class);
        var rec = Single(Alone(8).Run(Options(), now: Now), RecommendationType.Replace);
        var adding = ManagedCapacity.Of(Book.Classes[rec.NewNodes[0].ServerClass].Class);
        // The old node counts until it is gone: a limit that holds both allows it, one millicore less does not.
        Assert.Single(Alone(8).Run(Options(new PoolPolicy { ExpireAfter = expire, MaxManagedMilliCpu = (managed + adding).MilliCpu }), now: Now).Recommendations);
        Assert.Empty(Alone(8).Run(Options(new PoolPolicy { ExpireAfter = expire, MaxManagedMilliCpu = (managed + adding).MilliCpu - 1 }), now: Now).Recommendations);
        // New pools carry a taint the pod does not tolerate: it has nowhere to go.
        var tainted = new PoolPolicy { ExpireAfter = expire, Taints = [new Taint("dedicated", "batch", "NoSchedule")] };
        Assert.Empty(Alone(8).Run(Options(tainted), now: Now).Recommendations);
        var tolerates = ""","tolerations":[{"key":"dedicated","operator":"Equal","value":"batch","effect":"NoSchedule"}]""";
        Assert.True(Single(Alone(8, extraSpec: tolerates).Run(Options(tainted), now: Now), RecommendationType.Replace).Expired);
    }

    [Fact]
    public void ACheaperReplacementOfAnExpiredNodeSaysItExpired()
    {
        // A 2-core pod alone on an 8-core node: a cheaper class exists anyway.
        var s = new Scenario().Node("old", "gp.vs1.2xlarge-iad", labels: Managed, created: Now.AddDays(-8)).Pod("work", "old", "1500m", "2Gi");
        var plain = Single(s.Run(Options(PoolPolicy.None), now: Now), RecommendationType.Replace);
        Assert.False(plain.Expired);
        var expired = Single(s.Run(Options(), now: Now), RecommendationType.Replace);
        Assert.Equal(plain.Id, expired.Id);
        Assert.True(expired.Expired);
        Assert.StartsWith("expired:", expired.Reasons[0]);
        Assert.Equal(plain.Reasons, expired.Reasons.Skip(1));
    }

    [Fact]
    public void TheLoopReplacesExpiredNodesWithoutWaitingForConsolidateAfter()
    {
        var s = Alone(0);
        var clock = new ManualClock(Now);
        var synced = new ReflectorStatus("pods");
        synced.MarkSynced("1", Now);
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Book);
        var loop = new RecommenderLoop(new(s.Model, prices, [synced]),
            new(() => Options(new PoolPolicy { ExpireAfter = TimeSpan.FromDays(7), ConsolidateAfter = TimeSpan.FromHours(1) }), TimeSpan.FromMinutes(1)),
            NullLogger.Instance, clock);
        Assert.Empty(loop.RunOnce().Recommendations);
        clock.Advance(TimeSpan.FromDays(7));
        var rec = Single(loop.RunOnce(), RecommendationType.Replace);
        Assert.True(rec.Expired);
        Assert.Null(rec.ActionableAt);
    }
}
