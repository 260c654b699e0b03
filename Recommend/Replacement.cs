namespace Karpetrack;

/// <summary>
/// Replacement. Which candidates? The removal candidates no command has claimed. What command? Replace the node by
/// the cheapest set of new nodes its pods fit on, when that saves both thresholds; else keep it: it receives pods
/// of a removed node, or no cheaper shape exists (unless it is already known that its pods fit nowhere else). A managed
/// node past --expire-after is replaced by the cheapest new nodes its pods fit on even when they save nothing.
/// </summary>
internal static class Replacement
{
    /// <summary>
    /// Per-node replacement checks are many and small: a bounded exact polish is enough there. No simplex for the bound
    /// (a node of 200 pods or more far from its bound would run one per candidate, and it changes only the bound shown).
    /// </summary>
    private static readonly PackingOptions PerNode = new() { ExactItems = 12, ExactNodes = 20_000, PortfolioItems = 0, ExactLpMinItems = int.MaxValue };

    public static IEnumerable<Candidate> Candidates(PlanState s)
    {
        foreach (var c in s.Candidates)
        {
            s.Tick();
            if (!s.IsClaimed(c.Node.Name)) yield return c;
        }
    }

    public static Decision? Decide(PlanState s, Candidate c)
    {
        if (s.Receives(c.Node.Name)) return new Keep(c.Node.Name, new Blocker(BlockerReasons.ReceivesPods, [], []));
        if (Cheaper(s, c, expired: s.Expired(c.Node), out var limit) is { } rec) return new Command(rec, []);
        if (limit is not null) return Keep.AtLimit(c.Node.Name, limit);
        return s.BlockersOf(c.Node.Name).Any(b => b.Reason == BlockerReasons.PodsDoNotFit) ? null
            : new Keep(c.Node.Name, new Blocker(BlockerReasons.NotCheaper, [], []));
    }

    /// <summary>
    /// The cheapest new nodes for the node's pods, when they save both thresholds; for an <paramref name="expired"/> managed
    /// node (--expire-after) whether they save or not, within the managed capacity limits (with what the plan buys so far):
    /// past them, null and <paramref name="limit"/> says which limit.
    /// </summary>
    private static Recommendation? Cheaper(PlanState s, Candidate c, bool expired, out string? limit)
    {
        limit = null;
        var (node, movable, price) = c;
        var o = s.Options;
        if (movable.Length == 0) return null;
        // No packing can beat a lower bound: skip the search when even the cover bound (no packing instance needed) saves
        // too little. A candidate the packer's tighter bound would have ruled out still gets a full search: Solve takes no
        // threshold; its cost then saves too little too, so the plan is the same, only slower for those candidates.
        if (!expired && !o.SavesEnoughToReplace(price, price - s.CoverFloor(movable))) return null;
        var solution = Packer.Solve(s.NewNodesProblem(movable), PerNode);
        if (solution.Unplaced.Count > 0) return null;
        var savings = price - solution.Cost;
        bool savesEnough = o.SavesEnoughToReplace(price, savings);
        if (!savesEnough && !expired) return null;
        var capacity = new NewCapacity(solution.NewBins);
        if (o.Pools.LimitsCapacity && (limit = o.Pools.CheckCreate(s.Managed() + s.Planned(), s.Adding(capacity.Nodes))) is not null) return null;
        var moves = new List<PodMove>();
        capacity.AddMoves(moves, movable);
        var reasons = new List<string>();
        if (expired)
            // The join time, not an age: the text stays the same from run to run, so a watch of the plan sees no change.
            reasons.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"expired: {node.Name} joined {node.Created!.Value.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'}, more than --expire-after {ConsolidationWaits.Duration(o.Pools.ExpireAfter!.Value)} ago"));
        reasons.Add($"{node.Name} ({node.ServerClass}) costs {price:0.###} $/h; its {movable.Length} pods fit on {capacity.Describe()} for {solution.Cost:0.###} $/h");
        if (savesEnough) reasons.Add($"saves {savings / price * 100:0.#} % (threshold {o.ReplaceThresholdPercent} % and {o.ReplaceThresholdDollars} $/h)");
        else if (savings >= 0) reasons.Add($"saves {savings:0.###} $/h, below the threshold ({o.ReplaceThresholdPercent} % and {o.ReplaceThresholdDollars} $/h): replaced because it expired");
        else reasons.Add($"costs {-savings:0.###} $/h more: replaced because it expired");
        return Recommendations.Build(RecommendationType.Replace, [node.Name], capacity.Nodes, moves, [], new Costs(price, solution.Cost, solution.LowerBound),
            s.Budgets.Disruption(movable), reasons) with { Expired = expired };
    }
}
