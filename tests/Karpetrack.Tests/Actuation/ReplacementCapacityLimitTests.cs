using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// Issue 16, pool policy: --max-managed-cpu/--max-managed-memory hold for every operation that buys nodes, a regular
/// replacement (one that saves, not only the replacement of an expired node) included: in the recommender, which does not
/// propose it past the limit, and in the actuator's check right before it creates a pool.
/// </summary>
public class ReplacementCapacityLimitTests
{
    private static readonly Dictionary<string, string> ManagedLabels = new() { [Actuator.ManagedLabel] = "true" };

    /// <summary>A managed mh.vs1.2xlarge-iad (0.02 $/h) whose one small pod fits a floor-priced class: a replacement that saves 95 %.</summary>
    private static Scenario Pricey() => new Scenario()
        .Node("pricey", "mh.vs1.2xlarge-iad", labels: ManagedLabels)
        .Pod("small", "pricey", "500m", "1Gi", extraSpec: ""","nodeSelector":{"servers.ngpc.rxt.io/type":"spot"}""")
        .Node("other", "mh.vs1.medium-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("x", "other", "1900m", "13Gi");

    [Fact]
    public void TheRecommenderProposesNoReplacementPastTheManagedCapacityLimit()
    {
        var rec = Single(Pricey().Run(new RecommenderOptions { Region = "us-east-iad-1" }), RecommendationType.Replace);
        Assert.False(rec.Expired);
        Assert.Equal(["pricey"], rec.Nodes);
        var managed = ManagedCapacity.Of(Book.Classes["mh.vs1.2xlarge-iad"].Class);
        var adding = rec.NewNodes.Aggregate(ManagedCapacity.Zero, (t, n) => t + ManagedCapacity.Of(Book.Classes[n.ServerClass].Class, n.Count));
        RecommenderOptions Limited(PoolPolicy p) => new() { Region = "us-east-iad-1", Pools = p };
        // The old node counts until it is gone: a limit that holds both allows the replacement; one millicore or byte less does not.
        Assert.Equal(rec.Id, Single(Pricey().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = (managed + adding).MilliCpu })), RecommendationType.Replace).Id);
        Assert.DoesNotContain(Pricey().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = (managed + adding).MilliCpu - 1 })).Recommendations,
            r => r.Type == RecommendationType.Replace);
        Assert.DoesNotContain(Pricey().Run(Limited(new PoolPolicy { MaxManagedMemoryBytes = (managed + adding).MemoryBytes - 1 })).Recommendations,
            r => r.Type == RecommendationType.Replace);
    }

    /// <summary>
    /// The actuator, handed a regular replacement (it saves, it is not an expiry) of a removable managed node of the demo:
    /// under a limit the managed pools already fill, its pool create is refused (managed_capacity_limit) and nothing is
    /// written; under a limit with room, the same replacement buys its node.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task TheActuatorRefusesAReplacementsPoolPastTheManagedCapacityLimit(bool tight)
    {
        var options = ActuationRig.Quick() with
        {
            ScaleUpCooldown = TimeSpan.Zero,
            Pools = new PoolPolicy { MaxManagedMilliCpu = tight ? 1_000 : 10_000_000 },
        };
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromMinutes(5), steppedClock: true);
        rig.Detach(rig.Actuator);
        // Any saving passes the actuator's own replacement thresholds: only the limit can refuse it.
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 0, ReplaceThresholdDollars = 0 };
        var single = rig.Demo.ManagedNodes.GroupBy(m => m.Pool).Where(g => g.Count() == 1).Select(g => g.Single().Node).ToHashSet();
        string? node = null;
        await rig.WaitForAsync(() =>
        {
            rig.Recommender.RunOnce();
            return (node = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Nodes.Count == 1 && single.Contains(r.Nodes[0]))?.Nodes[0]) is not null;
        }, "a removable managed node");
        var view = rig.Model.Snapshot().Nodes.Single(n => n.Name == node);
        var price = rig.Prices.Current.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        // The cheapest class with a bid, cheaper than the node: the replacement saves.
        var (cheapest, cheap) = rig.Prices.Current.Classes.Where(c => options.Bids.Bid(c.Value.Prices) is not null)
            .Select(c => (c.Key, rig.Prices.Current.NodePrice(c.Key, "spot") ?? decimal.MaxValue)).MinBy(c => c.Item2);
        Assert.True(cheap < price, $"{cheapest} at {cheap} is not cheaper than {view.ServerClass} at {price}");
        var rec = new Recommendation("rep-0123456789ab", RecommendationType.Replace, [node!], [new NewNode(cheapest, 1, cheap)], [], [], price, cheap, 0, 0, -1,
            ["a test plan"]);
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery first: only a plan received after it is acted on
        rig.Actuator.OnPlan(new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1"));
        await rig.Actuator.TickAsync(CancellationToken.None);
        if (tight)
        {
            Assert.StartsWith("failed: managed capacity limit:", rig.Actuator.StateOf(rec.Id));
            Assert.Equal(1, rig.Actuator.Refusals.GetValueOrDefault("managed_capacity_limit"));
            Assert.Equal(1, rig.Count("create_pool", "refused"));
            Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
        }
        else
        {
            Assert.Equal(1, rig.Count("create_pool", "succeeded"));
            Assert.NotNull(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
            Assert.StartsWith("in progress: 0/1 new nodes Ready", rig.Actuator.StateOf(rec.Id));
        }
        Assert.NotEqual(true, rig.Node(node!)["spec"]?["unschedulable"]?.GetValue<bool>());
    }
}
