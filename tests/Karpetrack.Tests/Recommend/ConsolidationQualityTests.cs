namespace Karpetrack.Tests.Recommend;

/// <summary>Issue 17, goal 3: where consolidation sends pods decides how many nodes it can remove.</summary>
public class ConsolidationQualityTests
{
    private static readonly Dictionary<string, string> Dnd = new(Scenario.DoNotDisrupt);

    [Fact]
    public void PodsGoToNodesThatStayBeforeNodesThatCouldBeRemoved()
    {
        // "kept" may not be disrupted, so it is paid for whatever the plan. Filling the fullest node first sent a's pod to
        // c, which then had to stay as a receiver; sent to kept, both a and c go.
        var s = new Scenario()
            .Node("kept", "gp.vs1.large-iad", annotations: Dnd).Node("a", "gp.vs1.large-iad").Node("c", "gp.vs1.large-iad")
            .Pod("k1", "kept", "1", "2Gi").Pod("a1", "a", "500m", "1Gi").Pod("c1", "c", "1500m", "2Gi");
        var plan = s.Run();
        var removed = plan.Recommendations.Where(r => r.Type == RecommendationType.Consolidate).SelectMany(r => r.Nodes).Order().ToList();
        Assert.Equal(["a", "c"], removed);
        Assert.All(plan.Recommendations.SelectMany(r => r.Moves), m => Assert.Equal("kept", m.To));
    }

    [Fact]
    public void NodesThatEachSaveTooLittleAloneAreReplacedTogether()
    {
        // gp.vs1.large costs 0.005 $/h; its pod fits a 0.001 $/h class: 80 % saved, but 0.004 $/h is under the dollar
        // threshold (0.005), so no single replacement; and each pod needs a node of its own, so no multi-node
        // consolidation either (it must end with fewer nodes). Three together save 0.012 $/h.
        var s = new Scenario();
        foreach (var n in new[] { "n1", "n2", "n3" })
            s.Node(n, "gp.vs1.large-iad").Pod(n + "-a", n, "2500m", "3Gi");
        var plan = s.Run();
        var rec = Scenario.Single(plan, RecommendationType.Replace);
        Assert.Equal(["n1", "n2", "n3"], rec.Nodes);
        Assert.True(rec.SavingsPerHour >= 0.005m && rec.SavingsPerHour >= rec.CurrentCostPerHour * 0.2m, $"{rec.SavingsPerHour}");
        Assert.Equal(3, rec.Moves.Count);
        Assert.All(rec.Moves, m => Assert.Contains("#", m.To));
    }

    [Fact]
    public void NodesDearForTheirSizeAreNotFilledWhileAReplacementMayTakeThemAndStillAreAfter()
    {
        // A cheap node (ch.vs1.large, 0.001 $/h) with little room and two dear ones (gp.vs1.large, 0.005 $/h: the same cpu
        // and memory cost 0.002 $/h on floor-priced classes). Filling the fullest first sent d1's pod to d2, which stayed
        // at 0.005 $/h; now d1 and d2 both go, onto one new floor-priced node.
        var s = new Scenario().Node("cheap", "ch.vs1.large-iad").Node("a", "ch.vs1.large-iad")
            .Pod("c1", "cheap", "3500m", "3Gi").Pod("a1", "a", "200m", "256Mi")
            .Node("d1", "gp.vs1.large-iad").Pod("d1-p", "d1", "1500m", "3Gi")
            .Node("d2", "gp.vs1.large-iad").Pod("d2-p", "d2", "1600m", "3Gi");
        var plan = s.Run();
        var removed = plan.Recommendations.SelectMany(r => r.Nodes).Order().ToList();
        Assert.Equal(["a", "d1", "d2"], removed);
        Assert.Equal("cheap", Assert.Single(plan.Recommendations.Single(r => r.Nodes.Contains("a")).Moves).To);
        Assert.True(plan.Recommendations.Sum(r => r.SavingsPerHour) >= 0.01m - 0.001m, $"{plan.Recommendations.Sum(r => r.SavingsPerHour)}");
        // When no replacement can pass (a dollar threshold out of reach), the last pass still sends one dear node's pod to the other.
        var strict = s.Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdDollars = 1000 });
        Assert.DoesNotContain(strict.Recommendations, r => r.NewNodes.Count > 0);
        Assert.Equal(["a", "d1"], strict.Recommendations.SelectMany(r => r.Nodes).Order().ToList());
    }

    [Fact]
    public void NodesThatEachSaveEnoughAloneAreReplacedTogetherWhenTheirPodsShareANewNode()
    {
        // Each mh.vs1.xlarge (0.01 $/h) alone would go for a ch.vs1.medium (0.001 $/h): 90 % and 0.009 $/h saved, so a
        // one-node replacement passes. Node by node that buys two new nodes; the two pods share one ch.vs1.large (0.001 $/h).
        // Multi-node consolidation is off (candidates 1), so only a group replacement can pack them together.
        var s = new Scenario().Node("x1", "mh.vs1.xlarge-iad").Pod("x1-a", "x1", "1800m", "1Gi")
            .Node("x2", "mh.vs1.xlarge-iad").Pod("x2-a", "x2", "1800m", "1Gi");
        var plan = s.Run(new RecommenderOptions { Region = "us-east-iad-1", MultiNodeCandidates = 1 });
        var rec = Scenario.Single(plan, RecommendationType.Replace);
        Assert.Equal(["x1", "x2"], rec.Nodes);
        Assert.Equal(1, Assert.Single(rec.NewNodes).Count);
        Assert.Equal(0.001m, rec.NewCostPerHour);
        Assert.Equal(2, rec.Moves.Count);
        Assert.Contains("#", Assert.Single(rec.Moves.Select(m => m.To).Distinct()));
    }

    [Fact]
    public void AGroupReplacementNeverMixesKarpetracksOwnNodesWithOthers()
    {
        // The actuator acts only on a recommendation whose every node is of its own pools: m1 grouped with u1 would have
        // left m1's replacement advisory. m1 goes alone (it saves enough), u1 and u2 together.
        var s = new Scenario().Node("m1", "mh.vs1.xlarge-iad", labels: new() { [Actuator.ManagedLabel] = "true" }).Pod("m1-a", "m1", "1800m", "1Gi")
            .Node("u1", "mh.vs1.xlarge-iad").Pod("u1-a", "u1", "1800m", "1Gi")
            .Node("u2", "mh.vs1.xlarge-iad").Pod("u2-a", "u2", "1800m", "1Gi");
        var plan = s.Run(new RecommenderOptions { Region = "us-east-iad-1", MultiNodeCandidates = 1 });
        var replaces = plan.Recommendations.Where(r => r.Type == RecommendationType.Replace).Select(r => string.Join(",", r.Nodes)).Order().ToList();
        Assert.Equal(["m1", "u1,u2"], replaces);
    }

    [Fact]
    public void KarpetracksOwnNodesThatEachSaveEnoughAloneAreReplacedOneByOne()
    {
        // The same two nodes as above, but of Karpetrack's own pools: the actuator carries out one node at a time at the
        // default --max-disrupted-nodes 1 and refuses a group, so each gets a replacement of its own (actionable) rather
        // than one shared new node (advisory).
        var managed = new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" };
        var s = new Scenario().Node("m1", "mh.vs1.xlarge-iad", labels: new(managed)).Pod("m1-a", "m1", "1800m", "1Gi")
            .Node("m2", "mh.vs1.xlarge-iad", labels: new(managed)).Pod("m2-a", "m2", "1800m", "1Gi");
        var plan = s.Run(new RecommenderOptions { Region = "us-east-iad-1", MultiNodeCandidates = 1 });
        var replaces = plan.Recommendations.Where(r => r.Type == RecommendationType.Replace).Select(r => string.Join(",", r.Nodes)).Order().ToList();
        Assert.Equal(["m1", "m2"], replaces);
    }

    [Fact]
    public void AMultiNodeConsolidationSendsNoPodsToANodeDearForItsSize()
    {
        // d1 and d2 (ch.vs1.2xlarge, 0.01 $/h, nearly empty) are the least utilized: the multi-node consolidation's group.
        // Their pods fit on t's free room (mh.vs1.xlarge, 0.01 $/h, dear for its size: its pod alone fits a 0.001 $/h
        // class). Sent there, t became a receiver and stayed at 0.01 $/h; left out, d1 and d2 share one new node and t
        // is replaced on its own.
        var s = new Scenario()
            .Node("d1", "ch.vs1.2xlarge-iad").Pod("d1-a", "d1", "200m", "256Mi")
            .Node("d2", "ch.vs1.2xlarge-iad").Pod("d2-a", "d2", "200m", "256Mi")
            .Node("t", "mh.vs1.xlarge-iad").Pod("t-a", "t", "1800m", "1Gi");
        var plan = s.Run(new RecommenderOptions { Region = "us-east-iad-1", MultiNodeCandidates = 2 });
        Assert.Equal(["d1", "d2", "t"], plan.Recommendations.SelectMany(r => r.Nodes).Order().ToList());
        Assert.DoesNotContain(plan.Recommendations.SelectMany(r => r.Moves), m => m.To == "t");
        Assert.True(plan.Recommendations.Sum(r => r.NewCostPerHour) <= 0.002m, $"{plan.Recommendations.Sum(r => r.NewCostPerHour)}");
    }

    [Fact]
    public void EveryRecommendedMoveFitsAndNoBlockedNodeIsTouchedOnRandomClusters()
    {
        var classes = new[] { "gp.vs1.medium-iad", "gp.vs1.large-iad", "gp.vs1.xlarge-iad", "ch.vs1.large-iad", "mh.vs1.medium-iad", "mh.vs1.large-iad" };
        var (_, consolidated, _) = CheckRandomClusters(classes, seeds: 40, minNodes: 3, maxNodes: 12, maxPods: 5, fill: 0.6, podKinds: 10);
        Assert.True(consolidated >= 20, $"{consolidated} consolidations");
    }

    [Fact]
    public void EveryGroupReplacementMovesEveryPodOntoNodesThatHoldThemOnRandomClusters()
    {
        // Classes mostly dear for their size, filled so that their pods do not fit elsewhere, few blockers (whose nodes
        // would take the pods) and more nodes than one multi-node consolidation takes: replacements, many of them in groups.
        var classes = new[] { "gp.vs1.large-iad", "gp.vs1.xlarge-iad", "mh.vs1.large-iad", "mh.vs1.xlarge-iad", "ch.vs1.2xlarge-iad", "ch.vs1.large-iad" };
        var (replaced, _, groups) = CheckRandomClusters(classes, seeds: 20, minNodes: 12, maxNodes: 30, maxPods: 40, fill: 0.9, podKinds: 60);
        Assert.True(groups >= 8 && replaced > groups, $"{replaced} replacements, {groups} of groups");
    }

    /// <summary>
    /// Random clusters with a PDB at zero, do-not-disrupt nodes and bare pods: no node with a blocker is removed, every
    /// move fits (existing destinations never removed nor over their allocatable, new nodes within their class), every
    /// pod of a removed node moves, replacements save both thresholds, and every node left is explained.
    /// </summary>
    private static (int Replaced, int Consolidated, int Groups) CheckRandomClusters(string[] classes, int seeds, int minNodes, int maxNodes, int maxPods, double fill, int podKinds)
    {
        int replaced = 0, consolidated = 0, groups = 0;
        for (int seed = 1; seed <= seeds; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario().Pdb("shop", "guard", "guarded", 0);
            int nodes = rng.Next(minNodes, maxNodes);
            for (int n = 0; n < nodes; n++)
            {
                var cls = classes[rng.Next(classes.Length)];
                s.Node("n" + n, cls, annotations: rng.Next(6) == 0 ? Dnd : null);
                var c = Scenario.Book.Classes[cls].Class;
                long room = (long)(c.Cpu * 1000) - 100, used = 0;
                int pods = rng.Next(0, maxPods);
                for (int p = 0; p < pods; p++)
                {
                    long cpu = rng.Next(1, 8) * 100;
                    if (used + cpu > room * fill) break;
                    used += cpu;
                    int kind = rng.Next(podKinds);   // 0: a bare pod, 1: a pod under the PDB at zero
                    s.Pod($"n{n}-p{p}", "n" + n, $"{cpu}m", $"{rng.Next(1, 6) * 256}Mi", ownerKind: kind == 0 ? "None" : "ReplicaSet",
                        labels: kind == 1 ? """{"app":"guarded"}""" : """{"app":"app"}""");
                }
            }
            var snap = s.Model.Snapshot();
            var all = s.Model.Pods();
            var byName = all.ToDictionary(p => (p.Namespace, p.Name));
            var plan = s.Run();
            var pdbIndex = s.Pdbs.GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray());
            var removed = plan.Recommendations.SelectMany(r => r.Nodes).ToList();
            Assert.Equal(removed.Count, removed.Distinct().Count());
            foreach (var name in removed)
            {
                var n = snap.Nodes.Single(x => x.Name == name);
                Assert.Empty(Recommender.NodeBlockers(n, all.Where(p => p.Node == name).ToArray(), pdbIndex, Scenario.Book));
            }
            // Carry the moves out: an existing destination is never removed and never over its allocatable; each new node
            // holds what its class offers.
            var freeCpu = snap.Nodes.ToDictionary(n => n.Name, n => n.Allocatable[ResourceTable.Cpu] - n.Allocated[ResourceTable.Cpu]);
            var freeMem = snap.Nodes.ToDictionary(n => n.Name, n => n.Allocatable[ResourceTable.Memory] - n.Allocated[ResourceTable.Memory]);
            var offers = Offers.For(snap, Scenario.Book, "us-east-iad-1", new RecommenderOptions { Region = "us-east-iad-1" }, []).ToDictionary(o => o.Bin.Name);
            foreach (var r in plan.Recommendations)
            {
                var newUse = new Dictionary<string, (long Cpu, long Mem)>();
                foreach (var m in r.Moves)
                {
                    var pod = byName[(m.Namespace, m.Pod)];
                    Assert.Contains(m.From, r.Nodes);
                    if (m.To.Contains('#'))
                    {
                        var u = newUse.GetValueOrDefault(m.To);
                        newUse[m.To] = (u.Cpu + pod.Requests[ResourceTable.Cpu], u.Mem + pod.Requests[ResourceTable.Memory]);
                        continue;
                    }
                    Assert.DoesNotContain(m.To, removed);
                    freeCpu[m.To] -= pod.Requests[ResourceTable.Cpu];
                    freeMem[m.To] -= pod.Requests[ResourceTable.Memory];
                    Assert.True(freeCpu[m.To] >= 0 && freeMem[m.To] >= 0, $"seed {seed}: {m.To} overfull");
                }
                foreach (var (node, use) in newUse)
                {
                    var cap = offers[node[..node.IndexOf('#')]].Bin.Capacity;
                    Assert.True(use.Cpu <= cap.CpuMilli && use.Mem <= cap.MemoryBytes, $"seed {seed}: {node} overfull");
                }
                // The new nodes named in the moves are the ones the recommendation buys, no more, no fewer.
                Assert.Equal(r.NewNodes.Sum(n => n.Count), newUse.Count);
                // Every pod of a removed node moves (DaemonSet and mirror pods aside).
                Assert.Equal(all.Count(p => p.Node is { } at && r.Nodes.Contains(at) && !p.IsOverhead), r.Moves.Count);
                if (r.Type == RecommendationType.Replace) { replaced++; Assert.True(r.SavingsPerHour >= 0.005m && r.SavingsPerHour >= r.CurrentCostPerHour * 0.2m); }
                if (r.Type == RecommendationType.Replace && r.Nodes.Count > 1) groups++;
                if (r.Type == RecommendationType.Consolidate) consolidated++;
            }
            // Every node not removed is explained.
            Assert.All(snap.Nodes.Where(n => !removed.Contains(n.Name)), n => Assert.NotEmpty(plan.Blockers[n.Name]));
        }
        return (replaced, consolidated, groups);
    }
}
