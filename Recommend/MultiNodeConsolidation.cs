namespace Karpetrack;

/// <summary>
/// Multi-node consolidation. Which candidates? The least utilized removal candidates that still run pods, are not
/// claimed and receive none (at most RecommenderOptions.MultiNodeCandidates of them). What command? Remove them all when their pods
/// fit on the room left elsewhere plus new nodes, for less than they cost now and with fewer nodes than they are, and
/// the new nodes stay within the managed capacity limits. As in the first single-node pass, the removable nodes dear for
/// their size are no destination: a pod sent there makes the node a receiver, which no replacement may take (on the
/// 5,000-node bench cluster one group of 10 nodes spread its pods over about 290 of them and kept them all).
/// </summary>
internal static class MultiNodeConsolidation
{
    public static IReadOnlyList<Candidate> Candidates(PlanState s) =>
        s.Candidates.Where(c => !s.IsClaimed(c.Node.Name) && !s.Receives(c.Node.Name) && c.Movable.Length > 0)
            .OrderBy(c => Room.Utilization(c.Node)).ThenBy(c => c.Node.Name, StringComparer.Ordinal)
            .Take(s.Options.MultiNodeCandidates).ToList();

    public static Decision? Decide(PlanState s, IReadOnlyList<Candidate> group)
    {
        if (group.Count < 2) return null;
        var names = group.Select(g => g.Node.Name).ToHashSet(StringComparer.Ordinal);
        var tier = SingleNodeConsolidation.Tiers(s);
        var leaveOut = new HashSet<string>(names, StringComparer.Ordinal);
        foreach (var c in s.Candidates)
            if (!s.IsClaimed(c.Node.Name) && tier(c.Node.Name) == SingleNodeConsolidation.DearForSize) leaveOut.Add(c.Node.Name);
        var pods = group.SelectMany(g => g.Movable).ToArray();
        var packed = PackedPods.Solve(s.Room, pods, s.Offers, s.Resources, leaveOut: leaveOut);
        var solution = packed.Solution;
        if (solution.Unplaced.Count > 0) return null;
        var current = group.Sum(g => g.Price);
        var savings = current - solution.Cost;
        // Only the nodes that actually lose their pods count; a plan that keeps all of them is no consolidation.
        if (savings <= 0 || solution.NewBins.Count >= group.Count) return null;
        // Buying nodes makes it a replacement, held to the replacement thresholds; a pure removal needs only a positive saving.
        if (solution.NewBins.Count > 0 && !s.Options.SavesEnoughToReplace(current, savings)) return null;
        var capacity = packed.NewNodes();
        // What it buys is held to the managed capacity limits, as a replacement's is (the actuator would refuse it before the create).
        if (capacity.Nodes.Count > 0 && s.Options.Pools.LimitsCapacity
            && s.Options.Pools.CheckCreate(s.Managed() + s.Planned(), s.Adding(capacity.Nodes)) is { } limit)
            return new KeepAll(group.Select(g => Keep.AtLimit(g.Node.Name, limit)).ToList());
        var moves = new List<PodMove>();
        foreach (var (item, bin) in solution.OnExisting.OrderBy(kv => kv.Key))
            moves.Add(new PodMove(pods[item], pods[item].Node!, packed.Existing[bin].Name));
        capacity.AddMoves(moves, pods);
        var reasons = new List<string>
        {
            $"{group.Count} underused nodes ({current:0.###} $/h) fit onto the remaining nodes" + (capacity.Nodes.Count > 0 ? $" plus {capacity.Describe()}" : "") + $" for {solution.Cost:0.###} $/h",
        };
        var rec = Recommendations.Build(RecommendationType.Consolidate, group.Select(g => g.Node.Name).Order(StringComparer.Ordinal).ToList(), capacity.Nodes, moves, [],
            new Costs(current, solution.Cost, solution.LowerBound), s.Budgets.Disruption(pods), reasons);
        return new Command(rec, packed.Claims());
    }
}
