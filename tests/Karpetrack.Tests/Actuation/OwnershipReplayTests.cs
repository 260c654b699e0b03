using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// Issue 16's "no node touched by two operations" at the actuator (NodeOwnershipTests check the policy alone): the
/// sequence the fault suite caught ("X was cordoned for con-… and then for rep-…"), replayed on the rig's hand-moved
/// clock. A replacement of a node waits for its new pool; the recommender, counting that pool as capacity on its way,
/// plans the same node away onto it (a consolidation, or a delete-empty). The second operation is refused
/// (owned_by_operation) and never touches the node; the replacement carries on and removes it; the node's disruption
/// annotation only ever names the replacement.
/// </summary>
public class OwnershipReplayTests
{
    [Theory]
    [InlineData(RecommendationType.Consolidate)]
    [InlineData(RecommendationType.DeleteEmpty)]
    public async Task ANodeAReplacementOwnsWhileItsPoolIsInFlightIsRefusedToAnOperationPlannedOntoThatPool(RecommendationType type)
    {
        var options = SafetyTests.Calm();   // --max-disrupted-nodes 1
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromSeconds(5), steppedClock: true);
        // The demo's nodes are cheap: any saving at all is enough for the replacement.
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 0, ReplaceThresholdDollars = 0 };
        rig.Detach(rig.Actuator);
        var actuator = rig.NewActuator(options);
        rig.Detach(actuator);
        await actuator.TickAsync(CancellationToken.None);   // the recovery

        // The replacement's new class: the cheapest that can be bid on and costs no more at today's prices (with the zero
        // thresholds, its re-check passes on a saving of zero; the plan says it saves a little).
        var book = rig.Prices.Current;
        string? Cheaper(NodeView v) => book.NodePrice(v.ServerClass, v.CapacityType) is not { } price ? null
            : book.Classes.Keys.Where(c => book.NodePrice(c, "spot") is { } p && p <= price && options.Bids.Bid(book.Classes[c].Prices) is not null)
                .OrderBy(c => book.NodePrice(c, "spot")).FirstOrDefault();
        var view = DrainableManagedNode(rig, empty: type == RecommendationType.DeleteEmpty, v => Cheaper(v) is not null);
        var node = view.Name;
        var price = book.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        var cheap = Cheaper(view)!;
        var cheapPrice = book.NodePrice(cheap, "spot")!.Value;
        var replacement = new Recommendation("rep-owns-the-node", RecommendationType.Replace, [node], [new NewNode(cheap, 1, cheapPrice)], [], [],
            price, Math.Min(cheapPrice, price - 0.0001m), 0, 0, -1, ["a test plan"]);
        var second = type == RecommendationType.Consolidate
            ? SafetyTests.Removal("con-onto-the-pool", node, 1m)
            : new Recommendation("del-onto-the-pool", RecommendationType.DeleteEmpty, [node], [], [], [], 1m, 0, 0, 0, -1, ["a test plan"]);

        // Every value the node's disruption annotation takes on the API server (null: none).
        var annotations = new System.Collections.Concurrent.ConcurrentQueue<string?>();
        void Seen(ApiWrite w)
        {
            if (w.Resource == "nodes" && w.Name == node && w.Object is { } o) annotations.Enqueue(o["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]?.ToString());
        }
        rig.Demo.Api.Written += Seen;
        try
        {
            actuator.OnPlan(SafetyTests.PlanOf(replacement));
            await actuator.TickAsync(CancellationToken.None);   // its new pool created; it waits for the node
            Assert.NotNull(rig.Spot.Pool(Actuator.PoolName(replacement.Id, 0)));
            Assert.StartsWith("in progress", actuator.StateOf(replacement.Id));

            // The next plan removes the same node onto the pool in flight; the replacement is still waiting for it.
            actuator.OnPlan(SafetyTests.PlanOf(replacement, second));
            await actuator.TickAsync(CancellationToken.None);
            Assert.Equal(1, actuator.Refusals.GetValueOrDefault("owned_by_operation"));
            Assert.Equal($"refused: {node} belongs to an operation in progress", actuator.StateOf(second.Id));
            Assert.False(SafetyTests.IsCordoned(rig.Node(node)));
            Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
            Assert.StartsWith("in progress", actuator.StateOf(replacement.Id));

            // The replacement's node joins; it re-checks, cordons, drains and removes the node, with the second still planned.
            for (int i = 0; actuator.StateOf(replacement.Id) is not { } st || !st.StartsWith("succeeded", StringComparison.Ordinal); i++)
            {
                Assert.True(i < 40, $"{replacement.Id}: {actuator.StateOf(replacement.Id)}; {second.Id}: {actuator.StateOf(second.Id)}");
                Assert.StartsWith("refused", actuator.StateOf(second.Id));
                await rig.AdvanceAsync(TimeSpan.FromSeconds(1));
                await actuator.TickAsync(CancellationToken.None);
            }
        }
        finally { rig.Demo.Api.Written -= Seen; }
        Assert.StartsWith("refused", actuator.StateOf(second.Id));
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
        // The node was owned by one operation only: the annotation named the replacement, and nothing else, until the node went.
        var owners = annotations.Where(a => a is not null).Select(a => DisruptionRecord.Parse(a!).RecommendationId).Distinct().ToList();
        Assert.Equal([replacement.Id], owners);
    }

    /// <summary>A managed node alone in its pool with nothing that blocks its drain; with or without pods other than DaemonSet and mirror pods.</summary>
    private static NodeView DrainableManagedNode(ActuationRig rig, bool empty, Func<NodeView, bool> fits)
    {
        var snap = rig.Model.Snapshot();
        var pdbs = rig.Model.Pdbs.All().GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        foreach (var m in rig.Demo.ManagedNodes)
        {
            if (snap.Nodes.FirstOrDefault(n => n.Name == m.Node) is not { } view || snap.Nodes.Count(n => n.Pool == view.Pool) != 1) continue;
            var pods = rig.Model.PodsOn(m.Node);
            if (pods.Any(p => !p.IsOverhead) == empty) continue;
            if (Recommender.NodeBlockers(view, pods, pdbs, rig.Prices.Current).Count > 0 || !fits(view)) continue;
            return view;
        }
        throw new InvalidOperationException($"the demo has no drainable managed node {(empty ? "without" : "with")} pods");
    }
}
