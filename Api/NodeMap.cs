using Google.Protobuf.Collections;
using Google.Protobuf.WellKnownTypes;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// The node map (ListNodes): one row per node with its class, price, binpacking and state, from one
/// snapshot, one price book and one plan. The web view, `karpetrack nodes` and `karpetrack report`
/// all read it, so they cannot disagree about a node.
/// </summary>
public static class NodeMap
{
    public static V1.ListNodesResponse Build(ClusterSnapshot snap, PriceBook book, Plan plan, DateTimeOffset? planAt,
        IReadOnlyList<IReadOnlyList<string>> labelGroups)
    {
        var response = new V1.ListNodesResponse();
        if (planAt is { } at) response.PlanComputedAt = Timestamp.FromDateTimeOffset(at);
        response.LabelGroups.AddRange(labelGroups.Select(g => string.Join(",", g)));
        // Only the label-group keys travel: a Spot node carries ~20 labels, and 5,000 nodes of them
        // would multiply the web view's transfer for labels it never shows.
        var keys = labelGroups.SelectMany(g => g).Distinct(StringComparer.Ordinal).ToArray();
        var recommended = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var r in plan.Recommendations)
        {
            foreach (var node in r.Nodes)
            {
                if (!recommended.TryGetValue(node, out var ids)) recommended[node] = ids = [];
                ids.Add(r.Id);
            }
        }
        foreach (var n in snap.Nodes)
        {
            var m = Describe(new V1.NodeSummary
            {
                Name = n.Name, Cordoned = !n.Schedulable, Ready = n.Ready, Deleting = n.Deleting,
                Managed = n.Labels.TryGetValue(Actuator.ManagedLabel, out var managed) && managed == "true",
            }, n, book, snap.Resources);
            if (plan.Blockers.TryGetValue(n.Name, out var blockers)) m.Blockers.AddRange(blockers.Select(b => b.Reason).Distinct(StringComparer.Ordinal));
            if (recommended.TryGetValue(n.Name, out var recs)) m.RecommendationIds.AddRange(recs);
            foreach (var k in keys)
                if (n.Labels.TryGetValue(k, out var v)) m.Labels[k] = v;
            response.Nodes.Add(m);
        }
        return response;
    }

    /// <summary>
    /// Fills in what the node map and ExplainNode both say of a node: class and place, state, pods, age,
    /// price and idle cost (<see cref="CostRules"/>; unpriced stays unpriced) and the exported resources.
    /// </summary>
    public static T Describe<T>(T into, NodeView n, PriceBook book, ResourceTable table) where T : V1.INodeFacts
    {
        into.ServerClass = n.ServerClass;
        into.Pool = n.Pool;
        into.CapacityType = n.CapacityType;
        into.Region = n.Region;
        into.State = StateName(ClusterSnapshot.StateOf(n));
        into.Pods = n.Pods;
        if (n.Created is { } created) into.Created = Timestamp.FromDateTimeOffset(created);
        if (CostRules.Of(n, book) is { } cost)
        {
            into.Priced = true;
            into.PricePerHour = CostRules.Dollars(cost.Price);
            into.IdleCostPerHour = CostRules.Dollars(cost.Idle);
        }
        AddUsage(into.Resources, n, table);
        return into;
    }

    /// <summary>The exported resources of a node in base units (cores, bytes), as the metrics give them.</summary>
    private static void AddUsage(RepeatedField<V1.ResourceUsage> into, NodeView n, ResourceTable table)
    {
        foreach (var i in table.Exported)
        {
            double scale = table.IsMilli(i) ? 1000 : 1;
            into.Add(new V1.ResourceUsage
            {
                Resource = table.Name(i), Allocated = n.Allocated[i] / scale, Allocatable = n.Allocatable[i] / scale,
                Utilization = n.Utilization(i), DaemonsetOverhead = n.DaemonSetOverhead[i] / scale,
            });
        }
    }

    public static string StateName(NodeState s) => s switch
    {
        NodeState.Ready => "ready",
        NodeState.NotReady => "not_ready",
        NodeState.Cordoned => "cordoned",
        _ => "deleting",
    };
}
