namespace Karpetrack;

/// <summary>A bin's contents for the configuration LP: a type, and per group (row) how many of its items.</summary>
internal sealed record Pattern(int Type, int[] Rows, double[] Counts);

/// <summary>
/// The pricing problem of column generation, per type: the pattern (an integer count per group, within the type's
/// capacity in every dimension, the group's count and its per-bin limit) of the largest value at the given row prices.
/// Depth-first branch and bound over the groups in order of value per unit of Lagrangian size; the bound at a node is
/// the Lagrangian relaxation of the capacities, μ·residual + Σ over the groups still open of count·(price − μ·demand)⁺,
/// valid for any μ ≥ 0, with μ chosen at the root by coordinate descent (each step the exact minimum along one
/// dimension). Work is counted in nodes: when the budget runs out, the answer still carries a valid upper bound on the
/// best value (what the unexplored nodes' bounds allow), which is all the lower bound of the configuration LP needs.
/// </summary>
internal sealed class PatternPricing
{
    private const int D = PackingInstance.D;
    private readonly PackingInstance x;
    private readonly PatternGroups gr;
    private KnapsackLp? lpRelax;
    private KnapsackDpBound? dp;
    private int n;
    private int[] cand = [];
    private long[] ub = [];
    private double[] val = [];
    private long[] dem = [];
    private double[] suf = [];
    private long[] cur = [], best = [];
    private double[] keys = [];
    private double[] sz = [];
    private readonly double[] mu = new double[D];
    private readonly long[] res = new long[D];
    private double bestVal, upper, tolAbs;
    private readonly List<(double Value, long[] Counts)> incumbents = [];
    private double keepAbove;
    private long nodes, budget;
    private bool exhausted;

    public PatternPricing(PackingInstance x, PatternGroups gr)
    {
        this.x = x; this.gr = gr;
    }

    /// <summary>Nodes searched over all calls.</summary>
    public long Nodes { get; private set; }

    /// <summary>
    /// The best pattern for type t at row prices <paramref name="pi"/> worth more than <paramref name="floor"/> (null when
    /// none is found), and a valid upper bound on the best value (at least the floor plus a tolerance of 10⁻⁵ of the
    /// type's price: the search does not tell apart patterns within it). A floor at the type's price searches only for
    /// patterns that price out, and prunes far more than a search for the best. <paramref name="others"/> also receives
    /// up to three earlier incumbents worth more than the floor.
    /// </summary>
    public (Pattern? Best, double Value, double Upper) Price(int t, double[] pi, long nodeBudget, double floor, List<Pattern>? others)
    {
        incumbents.Clear();
        keepAbove = others is null ? double.PositiveInfinity : floor;
        tolAbs = 1e-5 * Math.Max(x.Price[t], 1e-12);
        Candidates(t, pi);
        if (n == 0) return (null, 0, floor + tolAbs);
        Multipliers(t);
        Order(t);
        for (int r = 0; r < D; r++) res[r] = x.Cap[t * D + r];
        bestVal = floor; upper = 0; nodes = 0; budget = nodeBudget; exhausted = false;
        Array.Clear(cur, 0, n);
        Array.Clear(best, 0, n);
        double lag = 0;
        for (int r = 0; r < D; r++) lag += mu[r] * res[r];
        Dfs(0, 0, lag);
        Nodes += nodes;
        upper = Math.Max(upper, bestVal + tolAbs);
        if (exhausted)
        {
            // The search ran out before its proof: the bounds that keep cpu or memory whole may still give one.
            dp ??= new KnapsackDpBound();
            for (int keep = 0; keep < 2 && upper > bestVal + tolAbs; keep++)
                upper = Math.Min(upper, Math.Max(bestVal + tolAbs, dp.Bound(x, t, keep, gr.Dem, cand, ub, val, n, mu)));
        }
        if (others is not null)
            for (int i = Math.Max(0, incumbents.Count - 4); i < incumbents.Count - 1; i++) others.Add(ToPattern(t, incumbents[i].Counts));
        if (bestVal <= floor) return (null, 0, upper);
        var p = ToPattern(t, best);
        return (p.Rows.Length == 0 ? null : p, bestVal, upper);
    }

    private Pattern ToPattern(int t, long[] counts)
    {
        int k = 0;
        for (int j = 0; j < n; j++) if (counts[j] > 0) k++;
        var rows = new int[k];
        var cs = new double[k];
        for (int j = 0, i = 0; j < n; j++) if (counts[j] > 0) { rows[i] = cand[j]; cs[i] = counts[j]; i++; }
        // Rows ascending, so that equal patterns compare equal.
        Array.Sort(rows, cs);
        return new Pattern(t, rows, cs);
    }

    /// <summary>The groups type t may take that are worth something and fit alone, with how many of each one bin may hold.</summary>
    private void Candidates(int t, double[] pi)
    {
        int G = gr.G;
        if (cand.Length < G)
        {
            cand = new int[G]; ub = new long[G]; val = new double[G]; dem = new long[G * D]; suf = new double[G + 1];
            cur = new long[G]; best = new long[G]; keys = new double[G]; sz = new double[G];
        }
        n = 0;
        double floor = 1e-12 * Math.Max(x.Price[t], 1e-12);
        for (int g = 0; g < G; g++)
        {
            if (!gr.TypeOk[g * x.T + t] || pi[g] <= floor) continue;
            long copies = Math.Min(gr.Count[g], gr.PerBin[g]);
            for (int r = 0; r < D; r++)
            {
                long need = gr.Dem[g * D + r];
                if (need > 0) copies = Math.Min(copies, x.Cap[t * D + r] / need);
            }
            if (copies <= 0) continue;
            cand[n] = g; ub[n] = copies; val[n] = pi[g];
            n++;
        }
    }

    /// <summary>
    /// μ: the duals of the LP relaxation of the knapsack (<see cref="KnapsackLp"/>), so that the root's Lagrangian bound is
    /// the LP bound; any μ ≥ 0 would be valid, a better one prunes more.
    /// </summary>
    private void Multipliers(int t)
    {
        lpRelax ??= new KnapsackLp();
        lpRelax.Solve(x, t, gr.Dem, cand, ub, val, n, mu);
    }

    /// <summary>Candidates by value per unit of Lagrangian size, best first; the suffix sums of their Lagrangian profits.</summary>
    private void Order(int t)
    {
        for (int j = 0; j < n; j++)
        {
            double size = 0;
            for (int r = 0; r < D; r++) size += mu[r] * gr.Dem[cand[j] * D + r];
            keys[j] = size > 0 ? -val[j] / size : double.NegativeInfinity;
        }
        var idx = new int[n];
        for (int j = 0; j < n; j++) idx[j] = j;
        Array.Sort(keys, idx, 0, n);
        var c2 = new int[n]; var u2 = new long[n]; var v2 = new double[n];
        for (int j = 0; j < n; j++) { c2[j] = cand[idx[j]]; u2[j] = ub[idx[j]]; v2[j] = val[idx[j]]; }
        Array.Copy(c2, cand, n); Array.Copy(u2, ub, n); Array.Copy(v2, val, n);
        for (int j = 0; j < n; j++)
        {
            sz[j] = 0;
            for (int r = 0; r < D; r++) { dem[j * D + r] = gr.Dem[cand[j] * D + r]; sz[j] += mu[r] * dem[j * D + r]; }
        }
        suf[n] = 0;
        for (int j = n - 1; j >= 0; j--)
        {
            double p = val[j];
            for (int r = 0; r < D; r++) p -= mu[r] * dem[j * D + r];
            suf[j] = suf[j + 1] + ub[j] * Math.Max(0, p);
        }
    }

    private void Dfs(int k, double value, double lag)
    {
        if (value > bestVal)
        {
            bestVal = value;
            Array.Copy(cur, best, n);
            if (value > keepAbove) incumbents.Add((value, (long[])cur.Clone()));
        }
        if (k == n) return;
        double bound = value + lag + suf[k];
        if (bound <= bestVal + tolAbs) return;
        bound = Math.Min(bound, value + Dantzig(k));
        if (bound <= bestVal + tolAbs) return;
        if (exhausted || ++nodes > budget) { exhausted = true; upper = Math.Max(upper, bound); return; }
        long c = ub[k];
        for (int r = 0; r < D; r++)
        {
            long need = dem[k * D + r];
            if (need > 0) c = Math.Min(c, res[r] / need);
        }
        double step = 0;
        for (int r = 0; r < D; r++) step += mu[r] * dem[k * D + r];
        for (int r = 0; r < D; r++) res[r] -= c * dem[k * D + r];
        for (; c >= 0; c--)
        {
            cur[k] = c;
            Dfs(k + 1, value + c * val[k], lag - c * step);
            for (int r = 0; r < D; r++) res[r] += dem[k * D + r];
        }
        // The loop gave back one copy too many.
        for (int r = 0; r < D; r++) res[r] -= dem[k * D + r];
        cur[k] = 0;
    }

    /// <summary>
    /// The LP bound of what the groups from k on can add under the one surrogate constraint μ·demand ≤ μ·residual (each
    /// at most as many as fit the residual): greedy in the search order, which is by value per surrogate size.
    /// </summary>
    private double Dantzig(int k)
    {
        double room = 0;
        for (int r = 0; r < D; r++) room += mu[r] * res[r];
        double add = 0;
        for (int j = k; j < n; j++)
        {
            long c = ub[j];
            for (int r = 0; r < D; r++)
            {
                long need = dem[j * D + r];
                if (need > 0) c = Math.Min(c, res[r] / need);
            }
            if (c <= 0) continue;
            double size = sz[j];
            if (size <= 0) { add += c * val[j]; continue; }
            if (c * size <= room) { add += c * val[j]; room -= c * size; continue; }
            return add + room / size * val[j];
        }
        return add;
    }

    private sealed class PointOrder : IComparer<(double At, double Drop)>
    {
        public static readonly PointOrder Instance = new();
        public int Compare((double At, double Drop) a, (double At, double Drop) b) => a.At.CompareTo(b.At);
    }
}
