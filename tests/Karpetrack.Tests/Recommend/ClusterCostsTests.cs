namespace Karpetrack.Tests.Recommend;

/// <summary>
/// The plan's cost outlook: today's cost, the cost after every recommendation, and the lower bound on hosting every pod,
/// checked against an exhaustive search that shares no code with the packer.
/// </summary>
public class ClusterCostsTests
{
    private static readonly RecommenderOptions Options = new() { Region = "us-east-iad-1" };

    // Small classes only, so that a handful of pods needs several nodes and the search stays small.
    private static readonly string[] Classes = ["gp.vs1.medium-iad", "gp.vs1.large-iad", "ch.vs1.medium-iad", "mh.vs1.medium-iad"];

    private static RecommenderOptions Small => Options with { Categories = ["gp", "ch", "mh"], MaxPricePerHour = MaxSmallPrice };
    private static decimal MaxSmallPrice => Classes.Max(c => Scenario.Book.NodePrice(c, "spot")!.Value);

    /// <summary>The plan as the recommender loop publishes it: with its cost outlook.</summary>
    private static Plan Outlook(Scenario s) =>
        ClusterCosts.WithOutlook(s.Run(), s.Model.Snapshot(), s.Model.Pods(), s.DaemonSets.ToArray(), Scenario.Book, Options);

    [Fact]
    public void TheBoundIsNeverAboveAnyFeasiblePlanOnRandomSmallClusters()
    {
        int checkedClusters = 0;
        for (int seed = 1; seed <= 60; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            int nodes = rng.Next(0, 4);
            var names = new List<string>();
            for (int n = 0; n < nodes; n++)
            {
                var cls = Classes[rng.Next(Classes.Length)];
                if (Scenario.Book.NodePrice(cls, "spot") is null) continue;
                s.Node("n" + n, cls);
                names.Add("n" + n);
            }
            int pods = rng.Next(1, 8);
            for (int p = 0; p < pods; p++)
            {
                var node = names.Count > 0 && rng.Next(3) > 0 ? names[rng.Next(names.Count)] : null;
                bool spread = rng.Next(4) == 0;
                s.Pod("p" + p, node, $"{rng.Next(1, 40) * 100}m", $"{rng.Next(1, 24) * 512}Mi", pending: node is null,
                    owner: "app-" + rng.Next(2), labels: spread ? Scenario.Spread : """{"app":"app"}""", extraSpec: spread ? Scenario.AntiSpread : "");
            }
            var o = Small;
            var snap = s.Model.Snapshot();
            var plan = ClusterCosts.WithOutlook(Recommender.Recommend(snap, s.Model.Pods(), [], [], Scenario.Book, o), snap, s.Model.Pods(), [], Scenario.Book, o);
            var costs = Assert.IsType<ClusterCosts>(plan.Costs);
            var offers = Offers.For(snap, Scenario.Book, "us-east-iad-1", o, []);
            var hosted = s.Model.Pods().Where(p => !p.IsOverhead).ToArray();
            var optimum = Exhaustive.Cheapest(hosted, offers, snap.Resources);
            if (optimum is null) { Assert.True(costs.LowerBoundExcludedPods > 0, $"seed {seed}"); continue; }
            Assert.Equal(0, costs.LowerBoundExcludedPods);
            Assert.True(costs.LowerBoundPerHour <= optimum.Value, $"seed {seed}: bound {costs.LowerBoundPerHour} above the optimum {optimum}");
            Assert.True(costs.LowerBoundPerHour > 0, $"seed {seed}");
            // Every node of these clusters is of an allowed class, so when no node is overfull (the random pods are put
            // anywhere) the plan carried out is a feasible hosting too.
            bool feasibleToday = snap.Nodes.All(n => n.Allocated[ResourceTable.Cpu] <= n.Allocatable[ResourceTable.Cpu]
                && n.Allocated[ResourceTable.Memory] <= n.Allocatable[ResourceTable.Memory]
                && hosted.Count(p => p.Node == n.Name && p.Shape.SelfAntiAffinityKey is not null) <= 1);
            // (Not with pending pods: a pending pod the plan puts in the room of an empty node does not keep that node from
            // a delete_empty recommendation, so the plan carried out may not host it; see README, cost outlook.)
            if (feasibleToday && !hosted.Any(p => p.Pending))
                Assert.True(costs.LowerBoundPerHour <= costs.AfterRecommendationsPerHour, $"seed {seed}: bound {costs.LowerBoundPerHour} above the cost after the recommendations {costs.AfterRecommendationsPerHour}");
            checkedClusters++;
        }
        Assert.True(checkedClusters >= 40, $"{checkedClusters} clusters checked");
    }

    [Fact]
    public void AfterRecommendationsIsTodayMinusEverySavingPlusTheNewNodes()
    {
        // Two half-empty nodes (one goes) and a pending pod that fits neither after the consolidation.
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.large-iad")
            .Pod("p1", "a", "500m", "1Gi").Pod("p2", "b", "500m", "1Gi").Pod("big", null, "3", "20Gi", pending: true);
        var plan = Outlook(s);
        var costs = plan.Costs!;
        var price = Scenario.Book.NodePrice("gp.vs1.large-iad", "spot")!.Value;
        Assert.Equal(2 * price, costs.TodayPerHour);
        Assert.Contains(plan.Recommendations, r => r.Type != RecommendationType.Provision && r.SavingsPerHour > 0);
        var bought = Scenario.Single(plan, RecommendationType.Provision).NewCostPerHour;
        Assert.True(bought > 0);
        var removed = plan.Recommendations.Where(r => r.Type != RecommendationType.Provision).Sum(r => r.SavingsPerHour);
        Assert.Equal(2 * price - removed + bought, costs.AfterRecommendationsPerHour);
        Assert.True(costs.AfterRecommendationsPerHour < costs.TodayPerHour + bought);
        Assert.True(costs.LowerBoundPerHour <= costs.AfterRecommendationsPerHour);
    }

    [Fact]
    public void PodsNoAllowedClassTakesAreLeftOutOfTheBoundAndCounted()
    {
        var pinned = ""","nodeSelector":{"kubernetes.io/hostname":"a"}""";
        var s = new Scenario().Node("a", "gp.vs1.large-iad")
            .Pod("free", "a", "1", "2Gi").Pod("pinned", "a", "1", "2Gi", extraSpec: pinned)
            .Pod("ds", "a", "1", "2Gi", ownerKind: "DaemonSet", owner: "agent");
        var costs = Outlook(s).Costs!;
        Assert.Equal(1, costs.LowerBoundExcludedPods);
        // The bound is that of the free pod alone: the same as a cluster without the pinned pod.
        var alone = Outlook(new Scenario().Node("a", "gp.vs1.large-iad").Pod("free", "a", "1", "2Gi")).Costs!;
        Assert.Equal(alone.LowerBoundPerHour, costs.LowerBoundPerHour);
        Assert.Equal(0, alone.LowerBoundExcludedPods);
        Assert.True(alone.LowerBoundPerHour > 0);
    }

    [Fact]
    public void PodsOnNodesTheSnapshotHidesAreLeftOutOfTheBoundPendingPodsAreNot()
    {
        // b is hidden (as --node-selector hides a node): its pod is neither in today's cost nor in the bound.
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.large-iad")
            .Pod("on-a", "a", "1", "2Gi").Pod("on-b", "b", "2", "6Gi").Pod("waiting", null, "1", "2Gi", pending: true);
        var full = s.Model.Snapshot();
        var hiding = new ClusterSnapshot
        {
            Resources = full.Resources, Nodes = full.Nodes.Where(n => n.Name != "b").ToArray(), PendingRequests = full.PendingRequests,
            PendingPods = full.PendingPods, Version = full.Version,
        };
        var costs = ClusterCosts.WithOutlook(Plan.Empty, hiding, s.Model.Pods(), [], Scenario.Book, Options).Costs!;
        var expected = ClusterCosts.LowerBound(s.Model.Pods().Where(p => p.Node != "b").ToArray(), Offers.For(hiding, Scenario.Book, "us-east-iad-1", Options, []), full.Resources);
        Assert.Equal(expected, (costs.LowerBoundPerHour, costs.LowerBoundExcludedPods));
        var all = ClusterCosts.WithOutlook(Plan.Empty, full, s.Model.Pods(), [], Scenario.Book, Options).Costs!;
        Assert.True(all.LowerBoundPerHour > costs.LowerBoundPerHour);
        // The pending pod counts: without it the bound is lower still.
        var noPending = ClusterCosts.LowerBound(s.Model.Pods().Where(p => p.Node == "a").ToArray(), Offers.For(hiding, Scenario.Book, "us-east-iad-1", Options, []), full.Resources);
        Assert.True(costs.LowerBoundPerHour > noPending.Bound);
    }

    [Fact]
    public void TheBoundOverCountedShapesIsTheBoundOverOneItemPerPod()
    {
        // Many pods of few shapes (the outlook counts each shape's pods instead of making an item per pod): the bound and
        // the pods left out are those of the packer's instance over every pod, to the last digit.
        var pinned = ""","nodeSelector":{"kubernetes.io/hostname":"n0"}""";
        int checkedBounds = 0;
        for (int seed = 1; seed <= 25; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            for (int n = 0; n < 3; n++) s.Node("n" + n, Classes[rng.Next(Classes.Length)]);
            int pods = rng.Next(20, 120);
            for (int p = 0; p < pods; p++)
            {
                int kind = rng.Next(6), o = rng.Next(3);
                var node = rng.Next(4) == 0 ? null : "n" + rng.Next(3);
                // Named after their owner, so that the model gives the pods of one owner and kind one shape; one owner's
                // pods request the same.
                var owner = $"app-{kind}-{o}";
                s.Pod($"{owner}-p{p}", node, $"{(1 + o) * 250}m", $"{(1 + (kind + o) % 3) * 512}Mi", pending: node is null, owner: owner,
                    ownerKind: kind == 0 ? "DaemonSet" : "ReplicaSet", labels: kind == 1 ? Scenario.Spread : """{"app":"app"}""",
                    extraSpec: kind == 1 ? Scenario.AntiSpread : kind == 2 ? pinned : "");
            }
            var snap = s.Model.Snapshot();
            var all = s.Model.Pods();
            var offers = Offers.For(snap, Scenario.Book, "us-east-iad-1", Small, []);
            var selected = new HashSet<string>(["n0", "n1"], StringComparer.Ordinal);   // n2's pods left out, as a hidden node's
            var actual = ClusterCosts.LowerBound(all, offers, snap.Resources, selected);
            var hosted = all.Where(p => !p.IsOverhead && !p.Terminating && (p.Pending || selected.Contains(p.Node!))).ToArray();
            var shapes = new ShapeIndex(snap.Resources);
            var x = new PackingInstance(shapes.Problem(hosted.Select((p, i) => shapes.Item(i, p)).ToList(), offers, [], (_, _) => false));
            var expected = hosted.Length == 0 ? (0m, 0) : (x.T == 0 || x.PlaceableItems == 0 ? 0m : DualBound.Compute(x).Reported, x.N - x.PlaceableItems);
            Assert.Equal(expected, actual);
            Assert.True(x.S < x.N, $"seed {seed}: {x.N} pods, {x.S} shapes");
            checkedBounds += actual.Bound > 0 ? 1 : 0;
        }
        Assert.True(checkedBounds >= 20, $"{checkedBounds} positive bounds");
    }

    [Fact]
    public void AnEmptyClusterCostsNothingAtBest()
    {
        var costs = Outlook(new Scenario().Node("a", "gp.vs1.large-iad")).Costs!;
        Assert.Equal((0m, 0), (costs.LowerBoundPerHour, costs.LowerBoundExcludedPods));
        Assert.Equal(0m, costs.AfterRecommendationsPerHour);   // the empty node is recommended for deletion
    }

    /// <summary>
    /// The cheapest hosting by exhaustive search, written apart from the packer: every partition of the pods into
    /// nodes, each block on the cheapest offer whose labels every pod accepts and whose room holds the block, no two
    /// pods of one anti-affinity group together. Null when some pod fits no offer.
    /// </summary>
    private static class Exhaustive
    {
        public static decimal? Cheapest(PodFacts[] pods, List<Offer> offers, ResourceTable t)
        {
            var blocks = new List<List<int>>();
            decimal? best = null;
            void Search(int i, decimal cost)
            {
                if (best is { } b && cost >= b) return;
                if (i == pods.Length) { best = cost; return; }
                for (int k = 0; k < blocks.Count; k++)
                {
                    var before = BlockPrice(blocks[k]);
                    blocks[k].Add(i);
                    if (BlockPrice(blocks[k]) is { } after) Search(i + 1, cost - before!.Value + after);
                    blocks[k].RemoveAt(blocks[k].Count - 1);
                }
                blocks.Add([i]);
                if (BlockPrice(blocks[^1]) is { } alone) Search(i + 1, cost + alone);
                blocks.RemoveAt(blocks.Count - 1);
            }
            decimal? BlockPrice(List<int> block)
            {
                long cpu = 0, mem = 0, gpu = 0;
                var groups = new HashSet<string>();
                foreach (var i in block)
                {
                    cpu += pods[i].Requests[ResourceTable.Cpu];
                    mem += pods[i].Requests[ResourceTable.Memory];
                    gpu += pods[i].Requests[t.GpuIndex];
                    if (pods[i].Shape.SelfAntiAffinityKey is { } key && !groups.Add(key)) return null;
                }
                decimal? cheapest = null;
                foreach (var o in offers)
                {
                    var c = o.Bin.Capacity;
                    if (cpu > c.CpuMilli || mem > c.MemoryBytes || gpu > c.Gpu || block.Count > c.Pods) continue;
                    if (block.Any(i => !pods[i].Shape.AllowsNode(o.Labels, []) || (o.Gpu && pods[i].Requests[t.GpuIndex] == 0))) continue;
                    if (cheapest is null || o.Bin.PricePerHour < cheapest) cheapest = o.Bin.PricePerHour;
                }
                return cheapest;
            }
            for (int i = 0; i < pods.Length; i++) if (BlockPrice([i]) is null) return null;
            Search(0, 0);
            return best;
        }
    }
}
