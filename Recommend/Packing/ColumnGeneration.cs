namespace Karpetrack;

/// <summary>
/// The configuration LP (Gilmore and Gomory): min Σ_p price_p·λ_p over patterns p (what one bin of a type may hold),
/// subject to every group's items covered, by column generation: <see cref="MasterLp"/> over the patterns found so far,
/// <see cref="PatternPricing"/> for new ones. Unlike the LP of <see cref="DualBound"/>, which lets a bin be filled by
/// fractions of items, a pattern holds whole items: where items are large against their bins (a 4-core pod fits once
/// on an 8-core node) or demand is split by constraints, this bound is much higher.
/// The lower bound is Farley's: for any row prices π ≥ 0, no pattern of type t is worth more than its pricing upper bound
/// κ_t, so π / max_t(κ_t / price_t) is dual feasible and Σ_g count_g·π_g / max_t(κ_t / price_t) is a lower bound on
/// every packing of the groups' items (valid at every iteration, whatever the master's accuracy).
/// </summary>
internal static class ColumnGeneration
{
    private const int D = PackingInstance.D;

    public sealed record Result(double Bound, double LpValue, PatternGroups Groups, IReadOnlyList<(Pattern Pattern, double Lambda)> Solution,
        int Iterations, long Pivots, long Nodes, bool Converged);

    /// <summary>
    /// Work limits: groups (the master's rows), iterations, simplex pivots per solve, pricing nodes per type and call, and
    /// pricing nodes in all (the rounds stop once they are spent; the bound so far stays valid).
    /// </summary>
    public sealed record Budget(int Groups = 160, int Iterations = 40, long Pivots = 4000, long NodesPerPricing = 4000, long TotalNodes = long.MaxValue);

    /// <summary>
    /// The configuration LP over the shapes <paramref name="include"/> names (all their items), its master started from
    /// the bins of <paramref name="start"/> (a packing of those items, seen as patterns); null when there is nothing
    /// to cover or a type is free (the bound would be 0) or capped by MaxCount (which the master does not model).
    /// </summary>
    public static Result? Run(PackingInstance x, DualBound dual, bool[] include, IEnumerable<Bin> start, Budget budget, bool roundUp = false, Func<int, long>? count = null)
    {
        int T = x.T;
        long items = 0;
        for (int s = 0; s < x.S; s++) if (include[s] && x.AnyType[s]) items += x.SItems[s].Length;
        if (items == 0) return null;
        for (int t = 0; t < T; t++) if (x.Price[t] <= 0 || x.MaxCount[t] < items) return null;
        var gr = PatternGroups.Build(x, include, count ?? (s => x.SItems[s].Length), budget.Groups, roundUp);
        int G = gr.G;
        if (G == 0) return null;
        var rhs = new double[G];
        var single = new double[G];
        var colType = new List<int>();
        for (int g = 0; g < G; g++)
        {
            rhs[g] = gr.Count[g];
            int cheapest = -1;
            foreach (int t in x.TypesByPrice) if (gr.TypeOk[g * T + t]) { cheapest = t; break; }
            // Rounded up, a group's demand may fit no type its members fit: no plan from these groups.
            if (cheapest < 0) return null;
            single[g] = x.Price[cheapest];
            colType.Add(cheapest);
        }
        var lp = new MasterLp(rhs, single);
        var useful = UsefulTypes(x, gr);
        var pricing = new PatternPricing(x, gr);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in StartPatterns(x, gr, start))
            if (Feasible(x, gr, p)) Add(lp, colType, seen, p, x.Price[p.Type]);
        foreach (var (from, to) in Exchanges(x, gr)) { lp.AddColumn(0, [Math.Min(from, to), Math.Max(from, to)], from < to ? [-1, 1] : [1, -1]); colType.Add(-1); }

        // The first prices are the resource LP's item values on the groups' demands: its bound, then at least that; they
        // are the first stability centre (Wentges' smoothing: the pricing works at a mix of the centre, the prices with the best
        // bound so far, and the master's duals, which jump about while the master has few columns).
        var center = ResourcePrices(x, gr, dual);
        double bound = Farley(x, gr, useful, pricing, center, budget.NodesPerPricing, null);
        var pi = new double[G];
        var y = new double[G];
        var found = new List<Pattern>();
        int iter = 0;
        bool converged = false;
        const double alpha = 0.5;
        for (; iter < budget.Iterations; iter++)
        {
            lp.Solve(budget.Pivots);
            var duals = lp.Duals;
            for (int g = 0; g < G; g++) y[g] = Math.Max(0, duals[g]);
            double z = lp.Objective();
            int added = 0;
            for (int attempt = 0; attempt < 2 && added == 0; attempt++)
            {
                double a = attempt == 0 ? alpha : 0;
                for (int g = 0; g < G; g++) pi[g] = a * center[g] + (1 - a) * y[g];
                found.Clear();
                double farley = Farley(x, gr, useful, pricing, pi, budget.NodesPerPricing, found);
                if (farley > bound) { bound = farley; Array.Copy(pi, center, G); }
                foreach (var p in found)
                {
                    double v = 0;
                    for (int k = 0; k < p.Rows.Length; k++) v += y[p.Rows[k]] * p.Counts[k];
                    if (v > x.Price[p.Type] * (1 + 1e-9) && Add(lp, colType, seen, p, x.Price[p.Type])) added++;
                }
                if (added == 0 && a == 0) converged = true;
            }
            if (converged || bound >= z * (1 - 1e-6) || pricing.Nodes >= budget.TotalNodes) break;
        }
        var primal = lp.Primal();
        var solution = new List<(Pattern, double)>();
        for (int j = 0; j < primal.Length; j++)
            if (primal[j] > 1e-9 && colType[j] >= 0) solution.Add((new Pattern(colType[j], lp.ColumnRows(j), lp.ColumnValues(j)), primal[j]));
        return new Result(bound, lp.Objective(), gr, solution, iter, lp.Pivots, pricing.Nodes, converged);
    }

    /// <summary>
    /// Dual-optimal inequalities (Ben Amor, Desrosiers and Valério de Carvalho 2006): a group that is at least as large as
    /// another in every dimension, on no type the other may not use, can give its place in any pattern to the other, so
    /// its price is at least the other's at some optimum. As columns (−1 on the larger, +1 on the smaller, at no cost)
    /// they leave the LP's optimum unchanged and keep the duals from swinging, which is what slows column generation.
    /// Each group gets the three smallest groups that dominate it; groups with a per-bin limit take no one's place.
    /// </summary>
    private static IEnumerable<(int From, int To)> Exchanges(PackingInstance x, PatternGroups gr)
    {
        int G = gr.G, T = x.T;
        var size = new double[G];
        for (int g = 0; g < G; g++) size[g] = (double)gr.Dem[g * D] / 1000 + gr.Dem[g * D + 1] / 1073741824.0 + gr.Dem[g * D + 2];
        var near = new List<int>();
        for (int h = 0; h < G; h++)
        {
            if (gr.PerBin[h] != long.MaxValue) continue;
            near.Clear();
            for (int g = 0; g < G; g++)
            {
                if (g == h || gr.PerBin[g] != long.MaxValue) continue;
                bool dominates = true;
                for (int r = 0; r < D && dominates; r++) dominates = gr.Dem[g * D + r] >= gr.Dem[h * D + r];
                for (int t = 0; t < T && dominates; t++) dominates = !gr.TypeOk[g * T + t] || gr.TypeOk[h * T + t];
                if (dominates) near.Add(g);
            }
            near.Sort((a, b) => size[a] != size[b] ? size[a].CompareTo(size[b]) : a.CompareTo(b));
            for (int k = 0; k < Math.Min(3, near.Count); k++) yield return (near[k], h);
        }
    }

    /// <summary>
    /// The types no other type beats: one at most as dear, at least as large everywhere, taking every group it takes holds
    /// every pattern of the other at no more cost, so the other's patterns never price out before its own do.
    /// </summary>
    private static int[] UsefulTypes(PackingInstance x, PatternGroups gr)
    {
        int T = x.T;
        var list = new List<int>();
        foreach (int t in x.TypesByPrice)
        {
            bool dominated = false, any = false;
            for (int g = 0; g < gr.G && !any; g++) any = gr.TypeOk[g * T + t];
            if (!any) continue;
            foreach (int u in list)
            {
                bool larger = x.Price[u] <= x.Price[t];
                for (int r = 0; r < D && larger; r++) larger = x.Cap[u * D + r] >= x.Cap[t * D + r];
                for (int g = 0; g < gr.G && larger; g++) larger = !gr.TypeOk[g * T + t] || gr.TypeOk[g * T + u];
                if (larger) { dominated = true; break; }
            }
            if (!dominated) list.Add(t);
        }
        return [.. list];
    }

    private static bool Add(MasterLp lp, List<int> colType, HashSet<string> seen, Pattern p, double price)
    {
        if (!seen.Add(Key(p))) return false;
        lp.AddColumn(price, p.Rows, p.Counts);
        colType.Add(p.Type);
        return true;
    }

    /// <summary>
    /// Whether a pattern fits its type at the groups' demands: always for the bins of a packing when demands are rounded
    /// down, not always when rounded up.
    /// </summary>
    private static bool Feasible(PackingInstance x, PatternGroups gr, Pattern p)
    {
        for (int r = 0; r < D; r++)
        {
            long used = 0;
            for (int k = 0; k < p.Rows.Length; k++) used += (long)p.Counts[k] * gr.Dem[p.Rows[k] * D + r];
            if (used > x.Cap[p.Type * D + r]) return false;
        }
        for (int k = 0; k < p.Rows.Length; k++)
            if (!gr.TypeOk[p.Rows[k] * x.T + p.Type] || p.Counts[k] > gr.PerBin[p.Rows[k]]) return false;
        return true;
    }

    /// <summary>The bins of a packing as patterns over the groups (items of shapes outside the groups left out).</summary>
    private static IEnumerable<Pattern> StartPatterns(PackingInstance x, PatternGroups gr, IEnumerable<Bin> bins)
    {
        var count = new Dictionary<int, double>();
        foreach (var b in bins)
        {
            if (b.Removed || b.Type < 0 || b.Items.Count == 0) continue;
            count.Clear();
            foreach (int i in b.Items)
            {
                int g = gr.GroupOf[x.ShapeOf[i]];
                if (g >= 0) count[g] = count.GetValueOrDefault(g) + 1;
            }
            if (count.Count == 0) continue;
            var rows = count.Keys.Order().ToArray();
            yield return new Pattern(b.Type, rows, rows.Select(g => count[g]).ToArray());
        }
    }

    /// <summary>Each group's value by the resource LP's price vectors: the cheapest over the types it may use.</summary>
    private static double[] ResourcePrices(PackingInstance x, PatternGroups gr, DualBound dual)
    {
        var pi = new double[gr.G];
        for (int g = 0; g < gr.G; g++)
        {
            double v = double.PositiveInfinity;
            for (int t = 0; t < x.T; t++)
            {
                if (!gr.TypeOk[g * x.T + t]) continue;
                double s = 0;
                for (int r = 0; r < D; r++) s += gr.Dem[g * D + r] * dual.W[t * D + r];
                v = Math.Min(v, s);
            }
            pi[g] = double.IsPositiveInfinity(v) ? 0 : v;
        }
        return pi;
    }

    /// <summary>Farley's bound at row prices π (pricing every type); the patterns found go to <paramref name="found"/>.</summary>
    private static double Farley(PackingInstance x, PatternGroups gr, int[] useful, PatternPricing pricing, double[] pi, long nodes, List<Pattern>? found)
    {
        double rho = 0, total = 0;
        for (int g = 0; g < gr.G; g++) total += gr.Count[g] * pi[g];
        if (total <= 0) return 0;
        foreach (int t in useful)
        {
            var (p, _, upper) = pricing.Price(t, pi, nodes, x.Price[t], found);
            rho = Math.Max(rho, upper / x.Price[t]);
            if (p is not null) found?.Add(p);
        }
        // Float rounding must never lift the bound above the truth.
        return rho > 0 ? total / rho * (1 - 1e-9) : 0;
    }

    private static string Key(Pattern p) => $"{p.Type}:{string.Join(',', p.Rows)}:{string.Join(',', p.Counts)}";
}
