namespace Karpetrack;

/// <summary>
/// Variable-sized, multi-dimensional bin packing with costs: existing free capacity first, then new bins
/// chosen by the share of remaining demand they absorb per dollar, then local search; a dual (LP) lower
/// bound comes with every answer. Pure and deterministic: no I/O, no clock, ties broken by ids.
/// </summary>
public static class Packer
{
    public static PackingSolution Solve(PackingProblem p, PackingOptions? o = null)
    {
        o ??= new PackingOptions();
        var x = new PackingInstance(p);
        var dual = DualBound.Compute(x);
        int placeable = x.PlaceableItems;
        if (placeable >= o.FloorCutMinItems) dual = dual.WithFloorCuts(x);
        var best = Construct(x, dual, o);
        if (placeable <= o.ChoicePortfolioItems && !o.ChoiceByDual)
        {
            var alt = Construct(x, dual, o with { ChoiceByDual = true });
            if (alt.Unplaced.Count < best.Unplaced.Count || (alt.Unplaced.Count == best.Unplaced.Count && alt.Cost < best.Cost)) best = alt;
        }
        if (placeable <= o.ChoicePortfolioItems && !o.ScanGreedy && HasGroups(x))
        {
            var alt = Construct(x, dual, o with { ScanGreedy = true });
            if (alt.Unplaced.Count < best.Unplaced.Count || (alt.Unplaced.Count == best.Unplaced.Count && alt.Cost < best.Cost)) best = alt;
        }
        if (placeable <= o.PortfolioItems)
        {
            foreach (var alt in new[] { Baselines.FirstFitDecreasing(x, dual), Baselines.BestFit(x, dual), Baselines.SingleLargeNode(x, dual) })
                if (alt.Unplaced.Count <= best.Unplaced.Count && alt.Cost < best.Cost)
                    best = alt with { Strategy = "portfolio: " + alt.Strategy };
        }
        if (placeable >= o.ExactLpMinItems && FarFromBound(best, dual, o.ExactLpGoal))
        {
            var lifted = dual.WithExactLp(x, o.ExactLpPivots);
            if (lifted.Reported > dual.Reported) { dual = lifted; best = best with { LowerBound = Math.Max(best.LowerBound, dual.Reported) }; }
        }
        if (placeable <= o.ExactItems)
        {
            var exact = BranchAndBound.Run(x, dual, best, o.ExactNodes);
            if (exact is not null) best = exact;
        }
        decimal configuration = 0;
        if (placeable <= o.ColumnGenerationItems && placeable >= o.ColumnGenerationMinItems)
            best = WithColumnGeneration(x, dual, best, o, out configuration);
        return best with { ResourceBound = dual.Reported, ConfigurationBound = configuration };
    }

    /// <summary>
    /// The configuration LP twice: groups rounded down for a bound (Farley's, valid whatever the master's accuracy), which
    /// replaces the reported one when higher; groups rounded up for a plan (<see cref="ColumnPlan"/>), kept when it
    /// places as many items for less. So the answer is never dearer nor its bound lower than without it.
    /// </summary>
    private static PackingSolution WithColumnGeneration(PackingInstance x, DualBound dual, PackingSolution best, PackingOptions o, out decimal configuration)
    {
        var budget = new ColumnGeneration.Budget(o.ColumnGroups, o.ColumnIterations, o.ColumnPivots, o.ColumnPricingNodes, o.ColumnTotalNodes);
        var plan = ColumnPlan.Build(x, dual, o, budget);
        if (plan is not null && plan.Unplaced.Count <= best.Unplaced.Count && plan.Cost < best.Cost) best = plan;
        var cg = configuration = BoundOnly(x, dual, o, budget);
        if (cg > best.LowerBound) best = best with { LowerBound = Math.Min(cg, best.Unplaced.Count == 0 ? best.Cost : decimal.MaxValue) };
        return best;
    }

    /// <summary>Farley's bound of the configuration LP over the items only new bins may take (0 when it does not apply).</summary>
    internal static decimal BoundOnly(PackingInstance x, DualBound dual, PackingOptions o, ColumnGeneration.Budget budget)
    {
        var include = new bool[x.S];
        bool any = false;
        for (int s = 0; s < x.S; s++) any |= include[s] = x.AnyType[s] && !x.AnyBin[s];
        if (!any) return 0;
        var st = new Assignment(x, dual);
        ExistingCapacity.Fill(st);
        Greedy.Run(st, o);
        var cg = ColumnGeneration.Run(x, dual, include, st.Bins, budget);
        if (cg is null || cg.Bound <= 0) return 0;
        decimal b = (decimal)(cg.Bound * (1 - 1e-9));
        // As in DualBound: whole millionths of prices allow rounding up to the next millionth.
        if (x.P.Types.All(t => decimal.Round(t.PricePerHour, 6) == t.PricePerHour)) b = Math.Ceiling(b * 1_000_000m) / 1_000_000m;
        return b;
    }

    /// <summary>
    /// The plan is more than <paramref name="goal"/> (a share) plus its dearest new bin above the bound: only then can a higher
    /// bound change whether it meets the goal (a negative goal: always).
    /// </summary>
    private static bool FarFromBound(PackingSolution plan, DualBound dual, double goal)
    {
        if (goal < 0) return true;
        decimal dearest = 0;
        foreach (var b in plan.NewBins) dearest = Math.Max(dearest, b.Type.PricePerHour);
        return plan.Cost > dual.Reported * (1 + (decimal)goal) + dearest;
    }

    private static bool HasGroups(PackingInstance x)
    {
        for (int s = 0; s < x.S; s++) if (x.SAa[s] >= 0 && x.AnyType[s]) return true;
        return false;
    }

    /// <summary>Existing capacity, the greedy, local search and ruin and repair: the packer's own construction.</summary>
    private static PackingSolution Construct(PackingInstance x, DualBound dual, PackingOptions o)
    {
        var st = new Assignment(x, dual);
        ExistingCapacity.Fill(st);
        Greedy.Run(st, o);
        if (x.PlaceableItems <= o.LocalSearchItems) LocalSearch.Run(st, o); else LocalSearch.DownsizeOnly(st);
        new RuinAndRepair(st, o).Run();
        string greedy = o.ScanGreedy ? "cost-aware scanning greedy" : o.ChoiceByDual ? "cost-aware greedy (types by dual value)" : "cost-aware greedy";
        return st.ToSolution(greedy + (o.ImproveWork > 0 ? " + local search + ruin and repair" : " + local search"));
    }

    public static decimal LowerBound(PackingProblem p) => LowerBound(p, out _);

    /// <summary>The same bound, and whether every item fits some bin type (the bound covers only those that do).</summary>
    public static decimal LowerBound(PackingProblem p, out bool allPlaceable)
    {
        var x = new PackingInstance(p);
        allPlaceable = x.PlaceableItems == x.N;
        return DualBound.Compute(x).Reported;
    }

    /// <summary>
    /// The configuration LP's bound alone (Farley's, by column generation within the options' budgets; see
    /// <see cref="ColumnGeneration"/>), for the items only new bins may take; 0 when it does not apply. Solve reports
    /// the higher of it and <see cref="LowerBound"/> where it runs the column generation.
    /// </summary>
    public static decimal ConfigurationBound(PackingProblem p, PackingOptions? o = null)
    {
        o ??= new PackingOptions();
        var x = new PackingInstance(p);
        var budget = new ColumnGeneration.Budget(o.ColumnGroups, o.ColumnIterations, o.ColumnPivots, o.ColumnPricingNodes, o.ColumnTotalNodes);
        return BoundOnly(x, DualBound.Compute(x), o, budget);
    }

    public static PackingSolution FirstFitDecreasing(PackingProblem p) { var x = new PackingInstance(p); return Baselines.FirstFitDecreasing(x, DualBound.Compute(x)); }
    public static PackingSolution BestFit(PackingProblem p) { var x = new PackingInstance(p); return Baselines.BestFit(x, DualBound.Compute(x)); }
    public static PackingSolution SingleLargeNode(PackingProblem p) { var x = new PackingInstance(p); return Baselines.SingleLargeNode(x, DualBound.Compute(x)); }

    /// <summary>
    /// Branch and bound over all placements; exact when it finishes (ProvenOptimal). The budget is turned into a
    /// node count at a fixed rate so that the answer never depends on the machine's speed.
    /// </summary>
    public static PackingSolution Exact(PackingProblem p, TimeSpan? budget = null)
    {
        var x = new PackingInstance(p);
        var dual = DualBound.Compute(x);
        var st = new Assignment(x, dual);
        ExistingCapacity.Fill(st);
        Greedy.Run(st, new PackingOptions());
        LocalSearch.Run(st, new PackingOptions());
        var start = st.ToSolution("cost-aware greedy + local search");
        long nodes = (long)Math.Min(2e9, (budget ?? TimeSpan.FromSeconds(10)).TotalMilliseconds * 5_000);
        return BranchAndBound.Run(x, dual, start, nodes) ?? start with { Strategy = "exact: no complete packing found; heuristic result" };
    }
}
