using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>Properties of whole plans: the same input gives the same plan and ids, moves never overcommit a destination, every pending pod is provisioned for or reported.</summary>
public class RecommenderTests
{
    [Fact]
    public void SameInputSamePlanAndIds()
    {
        Scenario Make() => new Scenario()
            .Node("a", "gp.vs1.2xlarge-iad").Pod("a1", "a", "1", "2Gi").Pod("a2", "a", "2", "2Gi")
            .Node("b", "gp.vs1.xlarge-iad").Pod("b1", "b", "500m", "1Gi")
            .Node("c", "mh.vs1.2xlarge-iad")
            .Pod("pend", null, "12", "40Gi", pending: true);
        var p1 = Make().Run();
        var p2 = Make().Run();
        Assert.Equal(p1.Recommendations.Select(r => r.Id), p2.Recommendations.Select(r => r.Id));
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(p1.Recommendations), System.Text.Json.JsonSerializer.Serialize(p2.Recommendations));
        Assert.All(p1.Recommendations, r => Assert.Matches("^[a-z]{3}-[0-9a-f]{12}$", r.Id));
        Assert.Equal(p1.Recommendations.Count, p1.Recommendations.Select(r => r.Id).Distinct().Count());
    }

    [Fact]
    public void RandomClustersNeverOvercommitADestination()
    {
        // Property: over random clusters, the moves of all recommendations together never put more on a
        // kept node than it had free, and nodes that are removed carry no blocker.
        for (int seed = 0; seed < 25; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            string[] classes = ["gp.vs1.large-iad", "gp.vs1.xlarge-iad", "ch.vs1.large-iad", "mh.vs1.large-iad", "gp.vs1.2xlarge-iad"];
            int nodes = rng.Next(3, 9);
            for (int n = 0; n < nodes; n++)
            {
                s.Node($"n{n}", classes[rng.Next(classes.Length)]);
                for (int k = rng.Next(0, 4); k > 0; k--) s.Pod($"p{n}-{k}", $"n{n}", $"{rng.Next(1, 12) * 100}m", $"{rng.Next(1, 8) * 256}Mi");
            }
            var snap = s.Model.Snapshot();
            var plan = s.Run();
            var removed = plan.Recommendations.SelectMany(r => r.Nodes).ToHashSet();
            var free = snap.Nodes.Where(n => !removed.Contains(n.Name)).ToDictionary(n => n.Name, n => (Cpu: n.Allocatable[0] - n.Allocated[0], Mem: n.Allocatable[1] - n.Allocated[1]));
            var requests = s.Model.Pods().ToDictionary(p => p.Namespace + "/" + p.Name, p => p.Requests);
            foreach (var m in plan.Recommendations.SelectMany(r => r.Moves).Where(m => free.ContainsKey(m.To)))
            {
                Assert.DoesNotContain(m.From, free.Keys);                  // pods only leave removed or replaced nodes
                var req = requests[m.Namespace + "/" + m.Pod];
                free[m.To] = (free[m.To].Cpu - req[0], free[m.To].Mem - req[1]);
            }
            Assert.All(free, kv => Assert.True(kv.Value.Cpu >= 0 && kv.Value.Mem >= 0, $"seed {seed}: {kv.Key} overcommitted by moves"));
            Assert.All(removed, n => Assert.False(plan.Blockers.ContainsKey(n)));
        }
    }

    [Fact]
    public void EveryPendingPodIsProvisionedForOrReportedUnplaceable()
    {
        // With no room anywhere, each pending pod ends up in exactly one of the two lists.
        for (int seed = 0; seed < 25; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario().Node("full", "gp.vs1.medium-iad", cordoned: true);
            int pending = rng.Next(1, 12);
            for (int k = 0; k < pending; k++) s.Pod($"pend-{k}", null, $"{rng.Next(1, 200) * 100}m", $"{rng.Next(1, 140)}Gi", pending: true);
            var plan = s.Run();
            var served = plan.Recommendations.Where(r => r.Type == RecommendationType.Provision).SelectMany(r => r.PendingPods).ToList();
            var lost = plan.Unplaceable.Select(u => u.Pod).ToList();
            Assert.Equal(pending, served.Count + lost.Count);
            Assert.Empty(served.Intersect(lost));
            Assert.All(plan.Unplaceable, u => Assert.False(string.IsNullOrWhiteSpace(u.Reason)));
        }
    }
}
