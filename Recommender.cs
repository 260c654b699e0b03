namespace Karpetrack;

/// <summary>
/// Pure and deterministic: a cluster snapshot, its pods, budgets, DaemonSets and a price book in,
/// a Plan out. Provisioning for pending pods, cheaper replacements, and consolidation (empty nodes,
/// underused nodes, several nodes into fewer), each with savings, disruption and reasons; every node
/// not recommended for removal carries its blockers. No I/O, no clock.
/// </summary>
/// <remarks>
/// Each method (Recommend/) answers the same two questions, as Karpenter's disruption methods do: which
/// candidates, and what command. A command is a plain value (Recommend/Commands.cs) that the plan state
/// (Recommend/PlanState.cs) applies to its ledgers, so each method sees what the ones before it claimed.
/// </remarks>
public static class Recommender
{
    /// <summary>The prefix naming a node that is still being provisioned, in placements and reasons.</summary>
    public const string ProvisioningPrefix = "provisioning:";

    public static Plan Recommend(ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o,
        IReadOnlyList<InFlightNode>? inFlight = null)
    {
        var state = new PlanState(snap, pods, pdbs, daemonSets, book, o, inFlight ?? []);

        // 1. Pending pods: existing room first (nodes being provisioned included, so that the same pending pods are
        //    never provisioned for twice), then the cheapest set of new nodes.
        state.Apply(Provisioning.Decide(state, Provisioning.Candidates(state)));
        state.Room.CloseProvisioning();

        // 2. Blockers for every node; the rest are candidates for removal: one node at a time, several together,
        //    then cheaper replacements of those that remain.
        state.RankCandidates();
        var single = new SingleNodeConsolidation(state);
        foreach (var c in single.Candidates()) state.Apply(single.Decide(c));
        state.Apply(MultiNodeConsolidation.Decide(state, MultiNodeConsolidation.Candidates(state)));
        foreach (var c in Replacement.Candidates(state)) state.Apply(Replacement.Decide(state, c));
        return state.ToPlan();
    }

    /// <summary>A node's own blockers, as a plan gives them (the actuator checks them again before it acts).</summary>
    public static List<Blocker> NodeBlockers(NodeView n, PodFacts[] onNode, Dictionary<string, PdbRecord[]> pdbIndex, PriceBook book) =>
        Blockers.Of(n, onNode, new Budgets(pdbIndex), book);

    // ---- what-if placement (the gRPC Simulate call) ------------------------------------------------

    /// <summary>
    /// The provisioning step on its own: the pods on the free capacity of the snapshot's nodes first,
    /// then on the cheapest new nodes allowed by the options (none when <paramref name="allowNew"/> is false).
    /// <paramref name="bound"/>: the pods already on the snapshot's nodes, whose anti-affinity groups those nodes keep.
    /// </summary>
    public static WhatIfPlacement Place(ClusterSnapshot snap, PodFacts[] pods, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o, bool allowNew = true,
        PodFacts[]? bound = null)
    {
        var region = Offers.Region(snap, o);
        var offers = allowNew ? Offers.For(snap, book, region, o, daemonSets) : [];
        var packed = PackedPods.Solve(Room.Of(snap, bound ?? [], o, [], offers), pods, offers, snap.Resources);
        var solution = packed.Solution;
        var placed = new Dictionary<int, (string Node, bool New)>();
        foreach (var (item, bin) in solution.OnExisting) placed[item] = (packed.Existing[bin].Name, false);
        var capacity = packed.NewNodes();
        foreach (var (i, node) in capacity.Placements()) placed[i] = (node, true);
        var unplaced = solution.Unplaced.Select(u => (u.Item, u.Reason)).ToList();
        // A pod the packer neither placed nor reported (it should not happen) is still reported, never lost.
        for (int i = 0; i < pods.Length; i++)
            if (!placed.ContainsKey(i) && !unplaced.Any(u => u.Item == i)) unplaced.Add((i, "not placed"));
        return new WhatIfPlacement(placed, unplaced, capacity.Nodes, solution.Cost, region);
    }

    /// <summary>A ready, empty node of a class that does not exist yet, reserved as existing nodes of the class are.</summary>
    public static NodeView HypotheticalNode(ClusterSnapshot snap, string name, ServerClass c, long[] allocated, int pods, RecommenderOptions o)
    {
        var (reservedCpu, reservedMem) = Offers.Reserved(snap, c, o);
        int count = snap.Resources.Count;
        var capacity = new long[count];
        var allocatable = new long[count];
        capacity[ResourceTable.Cpu] = (long)(c.Cpu * 1000);
        capacity[ResourceTable.Memory] = c.MemoryBytes;
        allocatable[ResourceTable.Cpu] = capacity[ResourceTable.Cpu] - reservedCpu;
        allocatable[ResourceTable.Memory] = capacity[ResourceTable.Memory] - reservedMem;
        capacity[snap.Resources.GpuIndex] = allocatable[snap.Resources.GpuIndex] = Offers.GpusOf(c, o);
        var labels = Offers.NewNodeLabels(c);
        labels["kubernetes.io/hostname"] = name;
        return new NodeView
        {
            Name = name, Labels = labels, Annotations = new Dictionary<string, string>(), Allocatable = allocatable, Capacity = capacity,
            Allocated = allocated, DaemonSetOverhead = new long[count], Pods = pods, Ready = true, Schedulable = true, Deleting = false,
            Taints = [], NamespaceRequests = new Dictionary<string, long[]>(),
        };
    }
}

/// <summary>Where each pod (by index) went: an existing node or "&lt;class&gt;#n"; the pods that fit nowhere and why.</summary>
public sealed record WhatIfPlacement(
    IReadOnlyDictionary<int, (string Node, bool New)> Placed,
    IReadOnlyList<(int Item, string Reason)> Unplaced,
    IReadOnlyList<NewNode> NewNodes,
    decimal NewCostPerHour,
    string Region);
