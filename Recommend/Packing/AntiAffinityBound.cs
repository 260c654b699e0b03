namespace Karpetrack;

/// <summary>
/// A third lower bound, for anti-affinity groups: the n pods of a group need n bins among the types they may use, a
/// constraint the LP relaxation lacks (it packs a group's pods into fractions of one bin). Added to the LP, its dual
/// variable μ (at most the cheapest such type's price) moves part of each such type's price from the dimensions to
/// the group: those types' price vectors are scaled by (price − μ) / price, every item is valued again with them, and
/// the group adds n·μ. Valid for every μ in range (weak duality); tried for the groups that weigh most, at μ of half
/// and all of their cheapest type's price. Only groups none of whose pods may use an existing node: one that may could
/// hold a pod of the group without buying anything.
/// </summary>
internal static class AntiAffinityBound
{
    private const int D = PackingInstance.D;
    private const int Groups = 3;

    public static double Compute(PackingInstance x, long[] capEff, double[] w, long[] gDem, double[] gCount, int[][] gTypes, int groups)
    {
        var members = new Dictionary<int, (int Count, bool[] Types, bool Existing)>();
        for (int s = 0; s < x.S; s++)
        {
            int g = x.SAa[s];
            if (g < 0 || !x.AnyType[s]) continue;
            if (!members.TryGetValue(g, out var m)) m = (0, new bool[x.T], false);
            for (int t = 0; t < x.T; t++) m.Types[t] |= x.TypeOk[s * x.T + t];
            members[g] = (m.Count + x.SItems[s].Length, m.Types, m.Existing || x.AnyBin[s]);
        }
        var candidates = members
            .Where(kv => !kv.Value.Existing && kv.Value.Count > 1)
            .Select(kv => (kv.Key, kv.Value.Count, kv.Value.Types, Cheapest: Cheapest(x, kv.Value.Types)))
            .OrderByDescending(c => c.Count * c.Cheapest).ThenBy(c => c.Key)
            .Take(Groups).ToList();
        if (candidates.Count == 0) return 0;
        // Items are valued over the dual's demand groups (demands rounded down, so never overstated) when no item may use
        // an existing node, else over the shapes that must go to new nodes.
        bool anyExisting = false;
        for (int s = 0; s < x.S && !anyExisting; s++) anyExisting = x.AnyBin[s] && x.AnyType[s];
        if (anyExisting && (long)x.S * x.T > 4_000_000) return 0;
        double best = 0;
        var scaled = new double[x.T * D];
        foreach (var c in candidates)
            foreach (double share in new[] { 0.5, 1.0 })
            {
                double mu = share * c.Cheapest;
                for (int t = 0; t < x.T; t++)
                {
                    double f = c.Types[t] && x.Price[t] > 0 ? (x.Price[t] - mu) / x.Price[t] : 1;
                    for (int r = 0; r < D; r++) scaled[t * D + r] = w[t * D + r] * f;
                }
                double total = c.Count * mu;
                if (!anyExisting)
                    for (int g = 0; g < groups; g++) total += gCount[g] * Cheapest(gDem, g, gTypes[g], scaled);
                else
                    for (int s = 0; s < x.S; s++)
                    {
                        if (!x.AnyType[s] || x.AnyBin[s]) continue;
                        var allowed = new List<int>();
                        for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) allowed.Add(t);
                        total += x.SItems[s].Length * Cheapest(x.SDem, s, allowed, scaled);
                    }
                best = Math.Max(best, total);
            }
        return best;
    }

    private static double Cheapest(PackingInstance x, bool[] types)
    {
        double p = double.PositiveInfinity;
        for (int t = 0; t < x.T; t++) if (types[t]) p = Math.Min(p, x.Price[t]);
        return double.IsPositiveInfinity(p) ? 0 : p;
    }

    /// <summary>The cheapest value of demand k of <paramref name="dem"/> over the types it may use, at the given price vectors.</summary>
    private static double Cheapest(long[] dem, int k, IReadOnlyList<int> types, double[] w)
    {
        double m = double.PositiveInfinity;
        foreach (int t in types)
        {
            double v = 0;
            for (int r = 0; r < D; r++) v += dem[k * D + r] * w[t * D + r];
            m = Math.Min(m, v);
        }
        return double.IsPositiveInfinity(m) ? 0 : m;
    }
}
