namespace Karpetrack;

/// <summary>
/// A second lower bound, for items that are large against the bins they may use (where the LP lets a bin be filled by
/// fractions of items that cannot share it): each type's price split over the dimensions as the LP's dual splits it
/// (or all on cpu, or all on memory), applied to each item's share of the capacity through a dual-feasible function f
/// (Fekete and Schepers 2001: shares that fit one bin together keep a sum of f at most 1). An item is then worth the
/// cheapest price·Σ split·f(share) over the types it may use, and no bin of any type holds more than its price: a valid
/// bound for every such f and split, of which the best is kept. Shares are compared in integers, so no rounding can
/// lift an item over a step of f.
/// </summary>
internal static class DualFeasibleBound
{
    private const int D = PackingInstance.D;
    /// <summary>f_k of Fekete and Schepers for k = 1..3, then u_ε for ε = 1/10 … 4/10 (in tenths).</summary>
    private static readonly (int Kind, int P)[] Functions = [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (1, 4)];
    /// <summary>Above this many (item class, type) pairs the bound is not tried: its cost would show at 100k pods.</summary>
    private const long MaxPairs = 400_000;

    /// <summary>
    /// The bound for the items no existing bin may take, over the demand groups of <see cref="DualBound"/> (demands
    /// rounded down, which f, being monotone, only lowers) when no item may use an existing bin, else over the shapes.
    /// </summary>
    public static double Compute(PackingInstance x, long[] capEff, double[] w, long[] gDem, double[] gCount, int[][] gTypes, int groups)
    {
        bool anyExisting = false;
        for (int s = 0; s < x.S && !anyExisting; s++) anyExisting = x.AnyBin[s] && x.AnyType[s];
        var dem = new List<long[]>();
        var count = new List<double>();
        var types = new List<int[]>();
        if (!anyExisting)
            for (int g = 0; g < groups; g++) { dem.Add(gDem[(g * D)..((g + 1) * D)]); count.Add(gCount[g]); types.Add(gTypes[g]); }
        else
        {
            for (int s = 0; s < x.S; s++)
            {
                if (!x.AnyType[s] || x.AnyBin[s]) continue;
                var ts = new List<int>();
                for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) ts.Add(t);
                dem.Add(x.SDem[(s * D)..((s + 1) * D)]); count.Add(x.SItems[s].Length); types.Add([.. ts]);
            }
        }
        if ((long)dem.Count * x.T > MaxPairs) return 0;
        var split = Splits(x, capEff, w);
        var used = new bool[D];
        foreach (var a in split) for (int t = 0; t < x.T; t++) for (int r = 0; r < D; r++) used[r] |= a[t * D + r] > 0;
        double best = 0;
        var worth = new double[split.Length];
        var least = new double[split.Length];
        var fv = new double[D];
        foreach (var f in Functions)
        {
            Array.Clear(worth);
            for (int i = 0; i < dem.Count; i++)
            {
                Array.Fill(least, double.PositiveInfinity);
                foreach (int t in types[i])
                {
                    for (int r = 0; r < D; r++) fv[r] = used[r] ? F(f, dem[i][r], capEff[t * D + r]) : 0;
                    for (int k = 0; k < split.Length; k++)
                    {
                        double v = 0;
                        for (int r = 0; r < D; r++) v += split[k][t * D + r] * fv[r];
                        least[k] = Math.Min(least[k], x.Price[t] * v);
                    }
                }
                for (int k = 0; k < split.Length; k++) if (!double.IsPositiveInfinity(least[k])) worth[k] += least[k] * count[i];
            }
            foreach (var v in worth) best = Math.Max(best, v);
        }
        return best;
    }

    /// <summary>Per type, shares of its price per dimension summing to at most 1: the LP dual's, all cpu, all memory.</summary>
    private static double[][] Splits(PackingInstance x, long[] capEff, double[] w)
    {
        var lp = new double[x.T * D];
        var cpu = new double[x.T * D];
        var mem = new double[x.T * D];
        for (int t = 0; t < x.T; t++)
        {
            double sum = 0;
            for (int r = 0; r < D; r++) sum += lp[t * D + r] = x.Price[t] > 0 ? w[t * D + r] * capEff[t * D + r] / x.Price[t] : 0;
            if (sum > 1) for (int r = 0; r < D; r++) lp[t * D + r] /= sum;
            if (capEff[t * D] > 0) cpu[t * D] = 1;
            if (capEff[t * D + 1] > 0) mem[t * D + 1] = 1;
        }
        return [lp, cpu, mem];
    }

    /// <summary>f(need / cap) in exact integer arithmetic; need ≤ cap.</summary>
    private static double F((int Kind, int P) f, long need, long cap)
    {
        if (need <= 0 || cap <= 0) return 0;
        if (f.Kind == 0)
        {
            // f_k(x) = x where (k+1)·x is whole, else floor((k+1)·x) / k.
            long k = f.P, scaled = (k + 1) * need;
            return scaled % cap == 0 ? (double)need / cap : (double)(scaled / cap) / k;
        }
        // u_ε(x) = 1 above 1 − ε, 0 below ε, x between; ε = P/10.
        if (10 * need > (10 - f.P) * cap) return 1;
        if (10 * need < f.P * cap) return 0;
        return (double)need / cap;
    }
}
