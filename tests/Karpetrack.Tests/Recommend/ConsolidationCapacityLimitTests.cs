using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>
/// Issue 16, pool policy, with issue 17 goal 3's consolidation: --max-managed-cpu/--max-managed-memory hold for the
/// multi-node paths that buy nodes too (a multi-node consolidation onto new nodes, a multi-node replacement), so the plan
/// shows nothing the actuator's pre-create check would refuse.
/// </summary>
public class ConsolidationCapacityLimitTests
{
    private static RecommenderOptions Limited(PoolPolicy p) => new() { Region = "us-east-iad-1", Pools = p };

    private static ManagedCapacity Adding(IEnumerable<Recommendation> recs) =>
        recs.SelectMany(r => r.NewNodes).Aggregate(ManagedCapacity.Zero, (t, n) => t + ManagedCapacity.Of(Book.Classes[n.ServerClass].Class, n.Count));

    /// <summary>Three 0.01 $/h 8-core nodes, each with a 5-core pod no other node has room for; together they fit one new 16-core node.</summary>
    private static Scenario ThreeNodesIntoOneNew()
    {
        var s = new Scenario();
        foreach (var n in new[] { "a", "b", "c" }) s.Node(n, "mh.vs1.xlarge-iad").Pod(n + "-p", n, "5", "2Gi");
        return s;
    }

    /// <summary>Three 0.005 $/h nodes whose pods each fit a 0.001 $/h class: each saves too little alone, together enough.</summary>
    private static Scenario ThreeSmallSavings()
    {
        var s = new Scenario();
        foreach (var n in new[] { "n1", "n2", "n3" }) s.Node(n, "gp.vs1.large-iad").Pod(n + "-a", n, "2500m", "3Gi");
        return s;
    }

    [Fact]
    public void AMultiNodeConsolidationOntoNewNodesStaysWithinTheManagedCapacityLimit()
    {
        var free = ThreeNodesIntoOneNew().Run();
        var rec = Assert.Single(free.Recommendations, r => r.Type == RecommendationType.Consolidate && r.Nodes.Count > 1);
        Assert.NotEmpty(rec.NewNodes);
        var adding = Adding([rec]);

        // A limit that holds the new node changes nothing.
        var roomy = ThreeNodesIntoOneNew().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = adding.MilliCpu }));
        Assert.Contains(roomy.Recommendations, r => r.Id == rec.Id);

        // One millicore (or byte) less: the consolidation is not proposed, and nothing else the plan buys passes the limit.
        foreach (var tight in new[] { new PoolPolicy { MaxManagedMilliCpu = adding.MilliCpu - 1 }, new PoolPolicy { MaxManagedMemoryBytes = adding.MemoryBytes - 1 } })
        {
            var plan = ThreeNodesIntoOneNew().Run(Limited(tight));
            Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Consolidate && r.NewNodes.Count > 0);
            Assert.Null(tight.CheckCreate(ManagedCapacity.Zero, Adding(plan.Recommendations)));
        }
    }

    [Fact]
    public void AMultiNodeReplacementStaysWithinTheManagedCapacityLimit()
    {
        var free = ThreeSmallSavings().Run();
        var rec = Single(free, RecommendationType.Replace);
        Assert.Equal(["n1", "n2", "n3"], rec.Nodes);
        var adding = Adding([rec]);

        var roomy = ThreeSmallSavings().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = adding.MilliCpu }));
        Assert.Equal(rec.Id, Single(roomy, RecommendationType.Replace).Id);

        foreach (var tight in new[] { new PoolPolicy { MaxManagedMilliCpu = adding.MilliCpu - 1 }, new PoolPolicy { MaxManagedMemoryBytes = adding.MemoryBytes - 1 } })
        {
            var plan = ThreeSmallSavings().Run(Limited(tight));
            Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Replace);
            Assert.Null(tight.CheckCreate(ManagedCapacity.Zero, Adding(plan.Recommendations)));
        }
    }

    /// <summary>A managed 0.02 $/h node whose one small pod fits a floor-priced class: a single replacement that saves 95 %.</summary>
    private static Scenario Pricey() => new Scenario()
        .Node("pricey", "mh.vs1.2xlarge-iad", labels: new() { [Actuator.ManagedLabel] = "true" })
        .Pod("small", "pricey", "500m", "1Gi", extraSpec: ""","nodeSelector":{"servers.ngpc.rxt.io/type":"spot"}""")
        .Node("other", "mh.vs1.medium-iad", annotations: new(DoNotDisrupt)).Pod("x", "other", "1900m", "13Gi");

    /// <summary>The nodes of <paramref name="nodes"/> the plan keeps are kept at the limit, with its text, and not as "no cheaper shape".</summary>
    private static void KeptAtTheLimit(Plan plan, string[] nodes, string flag)
    {
        var removed = plan.Recommendations.SelectMany(r => r.Nodes).ToHashSet();
        var kept = nodes.Where(n => !removed.Contains(n)).ToList();
        Assert.NotEmpty(kept);
        foreach (var n in kept)
        {
            var b = Assert.Single(plan.Blockers[n], b => b.Reason == BlockerReasons.ManagedCapacityLimit);
            Assert.NotNull(b.Detail);
            Assert.StartsWith("managed capacity limit: ", b.Detail);
            Assert.Contains($"would pass {flag}", b.Detail);
            Assert.DoesNotContain(plan.Blockers[n], x => x.Reason == BlockerReasons.NotCheaper);
        }
    }

    [Fact]
    public void ANodeKeptAtTheManagedCapacityLimitIsReportedSoOnEachPath()
    {
        // A single replacement.
        var rec = Single(Pricey().Run(), RecommendationType.Replace);
        var managed = ManagedCapacity.Of(Book.Classes["mh.vs1.2xlarge-iad"].Class);
        var adding = Adding([rec]);
        KeptAtTheLimit(Pricey().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = (managed + adding).MilliCpu - 1 })), ["pricey"], "--max-managed-cpu");
        KeptAtTheLimit(Pricey().Run(Limited(new PoolPolicy { MaxManagedMemoryBytes = (managed + adding).MemoryBytes - 1 })), ["pricey"], "--max-managed-memory");

        // A multi-node replacement.
        var together = Adding([Single(ThreeSmallSavings().Run(), RecommendationType.Replace)]);
        KeptAtTheLimit(ThreeSmallSavings().Run(Limited(new PoolPolicy { MaxManagedMilliCpu = together.MilliCpu - 1 })), ["n1", "n2", "n3"], "--max-managed-cpu");

        // A multi-node consolidation onto new nodes.
        var onto = Adding(ThreeNodesIntoOneNew().Run().Recommendations.Where(r => r.Nodes.Count > 1));
        KeptAtTheLimit(ThreeNodesIntoOneNew().Run(Limited(new PoolPolicy { MaxManagedMemoryBytes = onto.MemoryBytes - 1 })), ["a", "b", "c"], "--max-managed-memory");
    }

    [Fact]
    public void ExplainNodeNamesTheLimitThatKeepsTheNode()
    {
        var s = Pricey();
        var rec = Single(s.Run(), RecommendationType.Replace);
        var managed = ManagedCapacity.Of(Book.Classes["mh.vs1.2xlarge-iad"].Class);
        var options = Limited(new PoolPolicy { MaxManagedMilliCpu = (managed + Adding([rec])).MilliCpu - 1 });
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UtcNow);
        var prices = new PriceFeed(new PriceFeedOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, initial: Book);
        var loop = new RecommenderLoop(new(s.Model, prices, [status]), new(() => options, TimeSpan.Zero), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        loop.RunOnce();
        var e = new KarpetrackApi(s.Model, prices, loop, [status], () => options).ExplainNode(new Karpetrack.Api.V1.ExplainNodeRequest { Node = "pricey" });
        Assert.False(e.Replaceable);
        Assert.Equal(BlockerReasons.ManagedCapacityLimit, Assert.Single(e.Blockers, b => b.Reason != BlockerReasons.PodsDoNotFit).Reason);
        Assert.Contains(e.Reasons, r => r.StartsWith("managed capacity limit: ", StringComparison.Ordinal) && r.Contains("would pass --max-managed-cpu", StringComparison.Ordinal));
    }
}
