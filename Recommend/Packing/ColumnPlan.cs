namespace Karpetrack;

/// <summary>
/// An integer packing from the configuration LP (<see cref="ColumnGeneration"/>, groups rounded up so that every pattern
/// holds any of its groups' members): each pattern the LP uses is opened ⌊λ⌋ times and filled with real items of its
/// groups, the few items left over (the fractional parts) go through the packer's own greedy, and local search and ruin
/// and repair polish the whole. The LP chooses the mix of bin types and what shares a bin, which is where the greedy,
/// choosing one bin at a time, goes wrong on markets whose prices grow with node size or whose pods are pinned.
/// </summary>
internal static class ColumnPlan
{
    /// <summary>The packing, or null when the LP could not be set up (see <see cref="ColumnGeneration.Run"/>).</summary>
    public static PackingSolution? Build(PackingInstance x, DualBound dual, PackingOptions o, ColumnGeneration.Budget budget)
    {
        var st = new Assignment(x, dual);
        ExistingCapacity.Fill(st);
        var include = new bool[x.S];
        bool any = false;
        for (int s = 0; s < x.S; s++) any |= include[s] = x.AnyType[s] && st.Remaining(s) > 0;
        if (!any) return null;
        // The LP starts from the greedy's bins on a copy, so that its first basis is a real packing.
        var seed = new Assignment(x, dual);
        ExistingCapacity.Fill(seed);
        Greedy.Run(seed, o);
        // Only what existing capacity left over is to be covered.
        var cg = ColumnGeneration.Run(x, dual, include, seed.Bins, budget, roundUp: true, count: s => st.Remaining(s));
        if (cg is null) return null;
        var gr = cg.Groups;

        var members = new List<int>[gr.G];
        for (int g = 0; g < gr.G; g++) members[g] = [];
        for (int s = 0; s < x.S; s++) if (gr.GroupOf[s] >= 0) members[gr.GroupOf[s]].Add(s);
        // Within a group, the largest members first: the pattern has room for the group's largest demand in every place.
        foreach (var m in members) st.SortShapes(m);

        foreach (var (p, lambda) in cg.Solution.OrderByDescending(c => c.Lambda).ThenBy(c => c.Pattern.Type))
        {
            long copies = (long)Math.Floor(lambda + 1e-9);
            for (long c = 0; c < copies; c++)
            {
                // Opened at its first item, so that a pattern whose groups ran out opens nothing.
                Bin? b = null;
                for (int k = 0; k < p.Rows.Length; k++)
                {
                    long want = (long)Math.Round(p.Counts[k]);
                    foreach (int s in members[p.Rows[k]])
                    {
                        if (!x.TypeOk[s * x.T + p.Type]) continue;
                        while (want > 0 && st.Remaining(s) > 0 && (b is null || (st.AaOk(b, s) && st.Fits(b, s))))
                        {
                            b ??= st.OpenBin(p.Type);
                            st.PlaceItem(b, st.TakeItem(s));
                            want--;
                        }
                        if (want == 0) break;
                    }
                }
                if (b is null) break;
            }
        }
        Greedy.Run(st, o);
        if (x.PlaceableItems <= o.LocalSearchItems) LocalSearch.Run(st, o); else LocalSearch.DownsizeOnly(st);
        new RuinAndRepair(st, o).Run();
        return st.ToSolution("configuration LP (column generation) + cost-aware greedy + local search + ruin and repair");
    }
}
