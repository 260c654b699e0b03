namespace Karpetrack;

/// <summary>
/// Provisioning. Which candidates? The pending pods. What command? Each onto the room left on existing nodes
/// (nodes being provisioned included) first, the rest onto the cheapest set of new nodes; the pods that fit no
/// allowed class are reported unplaceable. The room pending pods take is no longer free for the removals.
/// </summary>
internal static class Provisioning
{
    public static PodFacts[] Candidates(PlanState s) => s.Pending;

    public static Provisioned? Decide(PlanState s, PodFacts[] pending)
    {
        if (pending.Length == 0) return null;
        var packed = PackedPods.Solve(s.Room, pending, s.Offers, s.Resources);
        var solution = packed.Solution;
        var lost = solution.Unplaced.Select(u => (PodRules.Describe(pending[u.Item]), u.Reason)).ToList();
        var pools = s.Options.Pools;
        if (pools.Taints.Count > 0)
            for (int k = 0; k < lost.Count; k++)
                if (!pools.Tolerated(pending[solution.Unplaced[k].Item].Shape.Tolerations))
                    lost[k] = (lost[k].Item1, lost[k].Item2 + "; it does not tolerate the taints of new pools (--pool-taints)");
        var claims = packed.Claims();
        if (solution.NewBins.Count == 0) return Result(new Command(null, claims), lost, 0, solution);

        var capacity = packed.NewNodes();
        // Runaway protection: nothing is bought past the managed capacity limits; the pods that needed new nodes say why.
        if (s.Options.Pools.LimitsCapacity && s.Options.Pools.CheckCreate(s.Managed(), s.Adding(capacity.Nodes)) is { } refusal)
        {
            foreach (var (i, _) in capacity.Placements()) lost.Add((PodRules.Describe(pending[i]), refusal));
            lost.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
            return Result(new Command(null, claims), lost, 0, solution);
        }
        // Each pod's name is built once, and each sort done once: a plan for 100k pending pods is mostly names and sorts.
        var moves = new List<PodMove>(pending.Length);
        capacity.AddMoves(moves, pending);
        var served = new string[moves.Count];
        for (int k = 0; k < moves.Count; k++) served[k] = moves[k].Namespace + "/" + moves[k].Pod;
        Array.Sort(served, StringComparer.Ordinal);
        var costs = new Costs(0, solution.Cost, solution.LowerBound);
        var rec = Recommendations.Build(RecommendationType.Provision, [], capacity.Nodes, moves, served, costs, Disruption.None,
            Reasons(packed, capacity, served.Length, lost.Count));
        return Result(new Command(rec, claims), lost, solution.Cost, solution);
    }

    private static Provisioned Result(Command command, List<(string Pod, string Reason)> lost, decimal cost, PackingSolution solution) =>
        new(command, lost, cost, solution.LowerBound) { ResourceBoundPerHour = solution.ResourceBound, ConfigurationBoundPerHour = solution.ConfigurationBound };

    private static List<string> Reasons(PackedPods packed, NewCapacity capacity, int served, int lost)
    {
        var solution = packed.Solution;
        var gap = solution.LowerBound > 0 ? (solution.Cost - solution.LowerBound) / solution.LowerBound * 100 : 0;
        var reasons = new List<string>
        {
            $"{served} pending pods fit on no existing node; the cheapest new capacity is {capacity.Describe()} for {solution.Cost:0.###} $/h",
            $"lower bound {solution.LowerBound:0.###} $/h ({gap:0.#} % gap, {solution.Strategy})",
        };
        int onProvisioning = solution.OnExisting.Count(x => packed.Existing[x.Value].Name.StartsWith(Recommender.ProvisioningPrefix, StringComparison.Ordinal));
        if (solution.OnExisting.Count > onProvisioning) reasons.Add($"{solution.OnExisting.Count - onProvisioning} other pending pods fit on existing free capacity");
        if (onProvisioning > 0) reasons.Add($"{onProvisioning} other pending pods fit on nodes already being provisioned");
        if (lost > 0) reasons.Add($"{lost} pending pods fit no allowed class");
        return reasons;
    }
}
