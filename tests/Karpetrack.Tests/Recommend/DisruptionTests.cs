using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>Disruption: empty nodes deleted, multi- and single-node consolidation (reserved room, constraints, thresholds), replacement with a cheaper class.</summary>
public class DisruptionTests
{
    [Fact]
    public void EmptyNodesAreDeletedFirst()
    {
        var plan = new Scenario()
            .Node("busy", "gp.vs1.2xlarge-iad").Pod("a", "busy", "2", "4Gi")
            .Node("empty", "gp.vs1.xlarge-iad").Pod("ds", "empty", "100m", "64Mi", ns: "kube-system", ownerKind: "DaemonSet", owner: "calico")
            .Run();
        var rec = Single(plan, RecommendationType.DeleteEmpty);
        Assert.Equal(["empty"], rec.Nodes);
        Assert.Equal(0.005m, rec.SavingsPerHour);
        Assert.Equal(0.005m * 730, rec.SavingsPerMonth);
        Assert.Empty(rec.Moves);
    }

    [Fact]
    public void ConsolidationReservesCapacitySoTwoRemovalsNeverShareFreeSpace()
    {
        // Three nodes, each half full: only one can go (its pods fill the others); the others stay, with a reason. (With the
        // default thresholds all three are better replaced together by floor-priced nodes: a replacement threshold of 90 %
        // leaves consolidation alone here.)
        var s = new Scenario();
        foreach (var n in new[] { "n1", "n2", "n3" })
            s.Node(n, "gp.vs1.large-iad").Pod(n + "-a", n, "1500m", "6Gi");
        var plan = s.Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdPercent = 90 });
        var removals = plan.Recommendations.Where(r => r.Type is RecommendationType.Consolidate or RecommendationType.DeleteEmpty).ToList();
        var removed = removals.SelectMany(r => r.Nodes).ToList();
        Assert.Single(removed);
        // Every move targets a node that is kept, and the moved requests fit what those nodes had free.
        var free = new Dictionary<string, long>();
        foreach (var n in new[] { "n1", "n2", "n3" }.Except(removed)) free[n] = 3900 - 1500;
        foreach (var m in removals.SelectMany(r => r.Moves)) free[m.To] -= 1500;
        Assert.All(free.Values, v => Assert.True(v >= 0));
        foreach (var kept in new[] { "n1", "n2", "n3" }.Except(removed)) Assert.NotEmpty(plan.Blockers[kept]);
    }

    /// <summary>
    /// Two floor-priced nodes (0.001 $/h each) whose pods fit the kept nodes only together: alone, the
    /// placement (largest pod onto the fullest node) puts the 2-core pod on "big" and strands the 4 GiB
    /// pod; the packer puts the 2-core pods on "d1" and "d2" and both 4 GiB pods on "big".
    /// </summary>
    private static Scenario TwoNodesThatOnlyGoTogether()
    {
        var s = new Scenario()
            .Node("big", "mh.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "13900m", "97Gi")
            .Node("d1", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d1-fill", "d1", "1900m", "5Gi")
            .Node("d2", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d2-fill", "d2", "1900m", "5Gi");
        foreach (var n in new[] { "x", "y" })
            s.Node(n, "ch.vs1.large-iad").Pod(n + "-cpu", n, "2", "1Gi").Pod(n + "-mem", n, "1", "4Gi");
        return s;
    }

    [Theory]
    [InlineData("0.005")]
    [InlineData("1")]      // the replacement threshold does not apply to a pure removal, however high
    public void MultiNodeConsolidationRemovesNodesForAnyPositiveSaving(string dollars)
    {
        var plan = TwoNodesThatOnlyGoTogether().Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdDollars = decimal.Parse(dollars, System.Globalization.CultureInfo.InvariantCulture) });
        var rec = Single(plan, RecommendationType.Consolidate);
        Assert.Equal(["x", "y"], rec.Nodes);
        Assert.Empty(rec.NewNodes);
        Assert.Equal(0.002m, rec.SavingsPerHour);                  // below the 0.005 $/h replacement threshold
        Assert.Equal(4, rec.Moves.Count);
        Assert.All(rec.Moves, m => Assert.Contains(m.To, new[] { "big", "d1", "d2" }));
        Assert.Equal(2, rec.Moves.Count(m => m.To == "big"));
        Assert.False(plan.Blockers.ContainsKey("x") || plan.Blockers.ContainsKey("y"));
    }

    /// <summary>Three 0.01 $/h 8-core nodes, each with a 5-core pod no other node has room for; together they fit one new 16-core node (0.01 $/h).</summary>
    private static Scenario ThreeNodesIntoOneNew()
    {
        var s = new Scenario();
        foreach (var n in new[] { "a", "b", "c" })
            s.Node(n, "mh.vs1.xlarge-iad").Pod(n + "-p", n, "5", "2Gi");
        return s;
    }

    [Theory]
    [InlineData(20, 0.005, true)]     // 0.03 → 0.01 $/h: saves 0.02 $/h, 67 %
    [InlineData(20, 0.025, false)]    // below the dollar threshold
    [InlineData(70, 0.005, false)]    // below the percentage threshold
    public void MultiNodeConsolidationOntoNewNodesIsHeldToTheReplacementThresholds(decimal percent, double dollars, bool recommended)
    {
        var o = new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdPercent = percent, ReplaceThresholdDollars = (decimal)dollars };
        var plan = ThreeNodesIntoOneNew().Run(o);
        var multi = plan.Recommendations.Where(r => r.Type == RecommendationType.Consolidate && r.Nodes.Count > 1).ToList();
        Assert.Equal(recommended, multi.Count == 1);
        if (!recommended) return;
        var rec = multi[0];
        Assert.Equal(["a", "b", "c"], rec.Nodes);
        Assert.Equal(1, rec.NewNodes.Sum(n => n.Count));
        Assert.Equal(0.03m, rec.CurrentCostPerHour);
        Assert.Equal(0.02m, rec.SavingsPerHour);
        Assert.All(rec.Moves, m => Assert.EndsWith("#1", m.To));
    }

    [Fact]
    public void NotReadyCordonedAndDeletingNodesAreNeverDestinations()
    {
        // Each of the three has room for everything; "src" has none for the pending pod.
        var plan = new Scenario()
            .Node("cordoned", "gp.vs1.2xlarge-iad", cordoned: true)
            .Node("notready", "gp.vs1.2xlarge-iad", ready: false)
            .Node("deleting", "gp.vs1.2xlarge-iad", deleting: true)
            .Node("src", "gp.vs1.large-iad").Pod("p", "src", "3", "1Gi")
            .Pod("pend", null, "2", "1Gi", pending: true)
            .Run();
        Assert.DoesNotContain(plan.Recommendations.SelectMany(r => r.Moves), m => m.To is "cordoned" or "notready" or "deleting");
        Assert.DoesNotContain(plan.Recommendations, r => r.Type is RecommendationType.Consolidate && r.Nodes.Contains("src"));
        Assert.Equal(["shop/pend"], Single(plan, RecommendationType.Provision).PendingPods);
        Assert.Contains(plan.Blockers["notready"], b => b.Reason == BlockerReasons.NodeNotReady);
        Assert.Contains(plan.Blockers["deleting"], b => b.Reason == BlockerReasons.NodeDeleting);
    }

    [Theory]
    [InlineData("selector")]
    [InlineData("taint")]
    [InlineData("anti-affinity")]
    public void ConsolidationPlacesDisplacedPodsOnlyWhereTheirConstraintsAllow(string constraint)
    {
        // "wrong" is fuller, so it is tried first, and has room; only its labels, taints or pods rule it out.
        string extra = constraint switch
        {
            "selector" => ""","nodeSelector":{"disk":"ssd"}""",
            "anti-affinity" => AntiSpread,
            _ => "",
        };
        Scenario Make(bool withRight, bool constrained)
        {
            var s = new Scenario()
                .Node("wrong", "gp.vs1.xlarge-iad", annotations: DoNotDisrupt,
                    taints: constrained && constraint == "taint" ? [new Taint("dedicated", "db", "NoSchedule")] : null)
                .Pod("fill", "wrong", "6", "20Gi");
            if (constrained && constraint == "anti-affinity") s.Pod("spread-0", "wrong", "100m", "128Mi", labels: Spread, extraSpec: AntiSpread);
            if (withRight) s.Node("right", "gp.vs1.2xlarge-iad", annotations: DoNotDisrupt, labels: new() { ["disk"] = "ssd" });
            return s.Node("src", "gp.vs1.large-iad")
                .Pod("mover", "src", "500m", "512Mi", labels: constraint == "anti-affinity" ? Spread : """{"app":"app"}""", extraSpec: constrained ? extra : "");
        }

        // Unconstrained, the pod goes to the fullest node with room: "wrong".
        Assert.Equal("wrong", Assert.Single(Single(Make(withRight: true, constrained: false).Run(), RecommendationType.Consolidate).Moves).To);
        // Constrained, to "right"; with no "right", nowhere, and the blocker names it.
        Assert.Equal("right", Assert.Single(Single(Make(withRight: true, constrained: true).Run(), RecommendationType.Consolidate).Moves).To);
        var stuck = Make(withRight: false, constrained: true).Run();
        Assert.DoesNotContain(stuck.Recommendations, r => r.Nodes.Contains("src") && r.Type != RecommendationType.Replace);
        Assert.Equal(["shop/mover"], Assert.Single(stuck.Blockers["src"], b => b.Reason == BlockerReasons.PodsDoNotFit).Pods);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MultiNodeConsolidationKeepsAntiAffinePodsAwayFromTheirPeers(bool antiAffine)
    {
        // As in TwoNodesThatOnlyGoTogether, with a spread pod on "big", the only node with room for the 4 GiB pods:
        // made anti-affine with it, x's 4 GiB pod has nowhere to go and the two nodes stay.
        var plan = new Scenario()
            .Node("big", "mh.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "13800m", "97Gi")
            .Pod("spread-0", "big", "100m", "128Mi", labels: Spread, extraSpec: AntiSpread)
            .Node("d1", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d1-fill", "d1", "1900m", "5Gi")
            .Node("d2", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d2-fill", "d2", "1900m", "5Gi")
            .Node("x", "ch.vs1.large-iad").Pod("x-cpu", "x", "2", "1Gi")
            .Pod("x-mem", "x", "1", "4Gi", labels: antiAffine ? Spread : """{"app":"app"}""", extraSpec: antiAffine ? AntiSpread : "")
            .Node("y", "ch.vs1.large-iad").Pod("y-cpu", "y", "2", "1Gi").Pod("y-mem", "y", "1", "4Gi")
            .Run();
        Assert.Equal(!antiAffine, plan.Recommendations.Any(r => r.Type == RecommendationType.Consolidate && r.Nodes.SequenceEqual(["x", "y"])));
        Assert.Equal(!antiAffine, plan.Recommendations.SelectMany(r => r.Moves).Any(m => m.Pod == "x-mem" && m.To == "big"));
    }

    [Fact]
    public void ReplacementNeedsTheThreshold()
    {
        // mh.vs1.2xlarge-iad costs 0.02 $/h; its one small pod fits a floor-priced class (0.001): a 95 % saving.
        var plan = new Scenario()
            .Node("pricey", "mh.vs1.2xlarge-iad").Pod("small", "pricey", "500m", "1Gi", extraSpec: ""","nodeSelector":{"servers.ngpc.rxt.io/type":"spot"}""")
            .Node("other", "mh.vs1.medium-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("x", "other", "1900m", "13Gi")
            .Run();
        var rec = Single(plan, RecommendationType.Replace);
        Assert.Equal(["pricey"], rec.Nodes);
        Assert.Equal(0.02m, rec.CurrentCostPerHour);
        Assert.True(rec.SavingsPerHour >= 0.019m - 0.0001m);
        Assert.Equal("shop/small", Assert.Single(rec.Moves).Namespace + "/" + rec.Moves[0].Pod);

        // A saving below 20 % is not worth a disruption.
        var flat = new Scenario()
            .Node("cheap", "gp.vs1.large-iad").Pod("mid", "cheap", "3", "12Gi")
            .Node("other", "gp.vs1.large-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("y", "other", "3", "12Gi")
            .Run(new RecommenderOptions { Region = "us-east-iad-1" });
        Assert.DoesNotContain(flat.Recommendations, r => r.Type == RecommendationType.Replace);
        Assert.Contains(flat.Blockers["cheap"], b => b.Reason is BlockerReasons.NotCheaper or BlockerReasons.PodsDoNotFit);
    }

    [Theory]
    [InlineData(null, null, false)]       // defaults: 0.004 $/h saved (80 %) is under the 0.005 $/h threshold
    [InlineData(20.0, 0.004, true)]       // the dollar threshold alone held it back
    [InlineData(80.0, 0.004, true)]       // exactly the percentage
    [InlineData(81.0, 0.004, false)]      // just above it
    [InlineData(0.0, 0.0041, false)]      // the dollars decide on their own too
    public void ReplacementNeedsBothTheDollarAndThePercentageThreshold(double? percent, double? dollars, bool replaced)
    {
        // gp.vs1.large-iad costs 0.005 $/h; its one pod fits ch.vs1.large-iad at 0.001 $/h; there is nowhere else to go.
        var o = new RecommenderOptions { Region = "us-east-iad-1" };
        if (percent is { } p) o = o with { ReplaceThresholdPercent = (decimal)p };
        if (dollars is { } d) o = o with { ReplaceThresholdDollars = (decimal)d };
        Assert.Equal((20m, 0.005m), (new RecommenderOptions().ReplaceThresholdPercent, new RecommenderOptions().ReplaceThresholdDollars));
        var plan = new Scenario().Node("solo", "gp.vs1.large-iad").Pod("p", "solo", "2500m", "2Gi").Run(o);
        Assert.Equal(replaced, plan.Recommendations.Any(r => r.Type == RecommendationType.Replace));
        if (replaced)
        {
            var rec = Single(plan, RecommendationType.Replace);
            Assert.Equal("ch.vs1.large-iad", rec.NewNodes.Single().ServerClass);
            Assert.Equal(0.004m, rec.SavingsPerHour);
        }
        else Assert.Contains(plan.Blockers["solo"], b => b.Reason == BlockerReasons.PodsDoNotFit);
    }
}
