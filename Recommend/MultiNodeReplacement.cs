namespace Karpetrack;

/// <summary>
/// Multi-node replacement. Which candidates? The removal candidates no command has claimed that receive no pods, run
/// pods, are not past --expire-after (their own replacement says so), and whose pods alone could cost less on new nodes
/// by the percentage threshold (the dual bound says so). The dearest per unit of the cheapest room first, in groups of at
/// most RecommenderOptions.MultiNodeCandidates. What command? Replace the group by the cheapest new nodes its pods fit
/// on, together, when that saves both thresholds (as one node's replacement must).
/// </summary>
/// <remarks>
/// Run before the one-node replacements (for nodes other than Karpetrack's own, which go one node at a time first: that
/// is what the actuator carries out at the default --max-disrupted-nodes 1) and again after them. Before: the pods of ten nodes packed together leave
/// about one part-filled new node where ten packings node by node leave ten (on the 5,000-node bench cluster the plan
/// fell from 7.0 to 5.5 $/h), and one node's saving may miss the dollar threshold (a 0.005 $/h node replaced by a
/// 0.001 $/h one saves 0.004) where a group's does not. After: the nodes of a group that saved too little, which no
/// replacement of their own took, regrouped.
/// </remarks>
internal static class MultiNodeReplacement
{
    /// <summary>
    /// A group's packing is hundreds of pods and there are hundreds of groups: the greedy, local search and a short ruin
    /// and repair, without the column generation and second construction that would make the 5,000-node scan miss 5 s.
    /// Nor the floor cuts or the simplex's exact LP: they lift only the bound a group reports, never its plan, and the
    /// cuts cost the 5,000-node scan 0.4-0.8 s.
    /// </summary>
    private static readonly PackingOptions Group = new() { ExactItems = 0, PortfolioItems = 0, ColumnGenerationItems = 0, ChoicePortfolioItems = 0, ImproveWork = 100_000, FloorCutMinItems = int.MaxValue, ExactLpMinItems = int.MaxValue };

    /// <summary>
    /// The groups, Karpetrack's own nodes apart from the others. <paramref name="ownNodes"/> false leaves its own nodes out:
    /// the first group pass does, so that an own node that saves enough alone gets a replacement of its own, which the
    /// actuator carries out at the default --max-disrupted-nodes 1, where it refuses a group (max_disrupted_nodes).
    /// </summary>
    public static List<List<Candidate>> Groups(PlanState s, bool ownNodes = true)
    {
        var o = s.Options;
        var eligible = new List<(Candidate C, double Waste)>();
        foreach (var c in s.Candidates)
        {
            s.Tick();
            if (s.IsClaimed(c.Node.Name) || s.Receives(c.Node.Name) || s.Expired(c.Node) || !Replaceable(s, c)) continue;
            var f = s.Floor(c.Node.Name, () => Floor(s, c.Movable))!.Value;
            eligible.Add((c, (double)((c.Price - f) / c.Price)));
        }
        int size = Math.Max(2, o.MultiNodeCandidates);
        var groups = new List<List<Candidate>>();
        // Nodes of Karpetrack's own pools apart from the others: the actuator acts only on a recommendation whose every node
        // is its own, so one node of another pool in a group would leave the whole group advisory.
        foreach (bool own in new[] { true, false })
        {
            if (own && !ownNodes) continue;
            var ordered = eligible.Where(e => Own(e.C.Node) == own)
                .OrderByDescending(e => e.Waste).ThenBy(e => e.C.Node.Name, StringComparer.Ordinal).Select(e => e.C).ToList();
            for (int i = 0; i < ordered.Count; i += size) groups.Add(ordered.GetRange(i, Math.Min(size, ordered.Count - i)));
        }
        return groups;
    }

    /// <summary>A node of a Karpetrack-managed pool, by the actuator's own test.</summary>
    private static bool Own(NodeView n) => Actuator.IsManaged(n);

    /// <summary>
    /// A candidate with pods whose lower bound on new nodes saves at least the percentage threshold of its price (the
    /// dollar threshold is what a group is for). Both lower bounds must: the cover bound (cpu and memory only, no packing
    /// instance) and the packer's dual bound; either can be the higher, each is valid, so a node either rules out could not
    /// save the percentage on its own. The groups are ranked by the packer's bound alone.
    /// </summary>
    public static bool Replaceable(PlanState s, Candidate c) =>
        c.Movable.Length > 0 && c.Price > 0 && c.Price - s.CoverFloor(c.Movable) >= c.Price * s.Options.ReplaceThresholdPercent / 100 && s.Floor(c.Node.Name, () => Floor(s, c.Movable)) is { } f
        && c.Price - f >= c.Price * s.Options.ReplaceThresholdPercent / 100;

    /// <summary>The packer's lower bound on new nodes for these pods; null when some pod fits no offered class.</summary>
    public static decimal? Floor(PlanState s, PodFacts[] pods)
    {
        var floor = Packer.LowerBound(s.NewNodesProblem(pods), out bool placeable);
        return placeable ? floor : null;
    }

    /// <summary>The group's movable pods in group order, in one array of their exact count.</summary>
    private static PodFacts[] Concat(List<Candidate> group)
    {
        int n = 0;
        foreach (var g in group) n += g.Movable.Length;
        var pods = new PodFacts[n];
        n = 0;
        foreach (var g in group) { g.Movable.CopyTo(pods, n); n += g.Movable.Length; }
        return pods;
    }

    public static Decision? Decide(PlanState s, List<Candidate> group)
    {
        if (group.Count < 2) return null;
        var o = s.Options;
        var pods = Concat(group);
        var solution = Packer.Solve(s.NewNodesProblem(pods), Group);
        if (solution.Unplaced.Count > 0) return null;
        var current = group.Sum(g => g.Price);
        var savings = current - solution.Cost;
        if (!o.SavesEnoughToReplace(current, savings)) return null;
        var capacity = new NewCapacity(solution.NewBins);
        if (o.Pools.LimitsCapacity && o.Pools.CheckCreate(s.Managed() + s.Planned(), s.Adding(capacity.Nodes)) is { } limit)
            return new KeepAll(group.Select(g => Keep.AtLimit(g.Node.Name, limit)).ToList());
        var moves = new List<PodMove>();
        capacity.AddMoves(moves, pods);
        var nodes = group.Select(g => g.Node.Name).Order(StringComparer.Ordinal).ToList();
        var reasons = new List<string>
        {
            $"{group.Count} nodes ({current:0.###} $/h) fit on {capacity.Describe()} for {solution.Cost:0.###} $/h",
            $"saves {savings / current * 100:0.#} % (threshold {o.ReplaceThresholdPercent} % and {o.ReplaceThresholdDollars} $/h), their pods packed together",
        };
        var rec = Recommendations.Build(RecommendationType.Replace, nodes, capacity.Nodes, moves, [], new Costs(current, solution.Cost, solution.LowerBound),
            s.Budgets.Disruption(pods), reasons);
        return new Command(rec, []);
    }
}
