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

    /// <param name="now">The time of the snapshot, for --expire-after; null: no node expires.</param>
    public static Plan Recommend(ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o,
        IReadOnlyList<InFlightNode>? inFlight = null, DateTimeOffset? now = null)
    {
        var state = new PlanState(snap, pods, pdbs, daemonSets, book, o, inFlight ?? [], now);

        // 1. Pending pods: existing room first (nodes being provisioned included, so that the same pending pods are
        //    never provisioned for twice), then the cheapest set of new nodes.
        state.Apply(Provisioning.Decide(state, Provisioning.Candidates(state)));
        state.Room.CloseProvisioning();

        // 2. Blockers for every node; the rest are candidates for removal: one node at a time, several together,
        //    then cheaper replacements of those that remain (and of managed nodes past --expire-after, cheaper or not).
        state.RankCandidates();
        var single = new SingleNodeConsolidation(state);
        foreach (var c in single.Candidates()) state.Apply(single.Decide(c));
        state.Apply(MultiNodeConsolidation.Decide(state, MultiNodeConsolidation.Candidates(state)));
        //    Replacements in groups first (their pods packed together waste less than node by node, and one node's saving
        //    may miss the dollar threshold where a group's does not), then one node at a time, then groups of what is left.
        //    Karpetrack's own nodes skip the first group pass: one node at a time is what the actuator carries out at the
        //    default --max-disrupted-nodes 1.
        foreach (var g in MultiNodeReplacement.Groups(state, ownNodes: false)) state.Apply(MultiNodeReplacement.Decide(state, g));
        foreach (var c in Replacement.Candidates(state)) state.Apply(Replacement.Decide(state, c));
        foreach (var g in MultiNodeReplacement.Groups(state)) state.Apply(MultiNodeReplacement.Decide(state, g));
        //    Last, one node at a time again over what is left, onto every node (the first pass spared those dear for their size).
        var last = new SingleNodeConsolidation(state, lastPass: true);
        foreach (var c in last.Candidates()) state.Apply(last.Decide(c));
        return state.ToPlan();
    }

    /// <summary>A node's own blockers, as a plan gives them (the actuator checks them again before it acts).</summary>
    public static List<Blocker> NodeBlockers(NodeView n, PodFacts[] onNode, Dictionary<string, PdbRecord[]> pdbIndex, PriceBook book) =>
        Blockers.Of(n, onNode, new Budgets(pdbIndex), book);
}
