namespace Karpetrack;

/// <summary>
/// The dual of the LP relaxation "each item split over the types it may use, each type bought fractionally":
/// per type t a price vector w_t over the dimensions with capacity·w_t = price_t; an item is then worth the
/// cheapest w_t·demand over its allowed types, and the sum over items is a lower bound on any packing for
/// every such w (weak duality), so any w found is safe and a better search only tightens the bound.
/// Capacities are first rounded down to the gcd of the demands in each dimension (no packing can fill the rest).
/// </summary>
internal sealed class DualBound
{
    public readonly double[] W;          // T×D
    public readonly double[] Value;      // per shape: worth of one copy (0 when no type takes it)
    public readonly double[] WMax;       // per dimension: max over types, prices existing capacity
    public readonly decimal Reported;    // max of the valid bounds below, for the items that need new bins

    // The LP's capacities and demand groups, kept for the floor cuts and the exact solve.
    private readonly (long[] CapEff, long[] GDem, double[] GCount, int[][] GTypes, int Groups) lp;
    // The floor cut WithFloorCuts chose (0: none) and the ascent's price vectors for it, for the exact solve.
    private readonly long floorQ;
    private readonly double[]? floorW;
    // Per shape: its demand group (-1: none), for the exact solve's mean demands.
    private readonly int[] groupOf;

    private DualBound(double[] w, double[] value, double[] wmax, decimal reported, (long[], long[], double[], int[][], int) lp, int[] groupOf, long floorQ = 0, double[]? floorW = null)
    {
        W = w; Value = value; WMax = wmax; Reported = reported; this.lp = lp; this.groupOf = groupOf; this.floorQ = floorQ; this.floorW = floorW;
    }

    /// <summary>Pivots and rows of the last exact solves (for the bench's profile).</summary>
    internal ResourceLp.Stats[] ExactStats { get; private init; } = [];

    /// <summary>
    /// The bound raised by solving the resource LP by the simplex (<see cref="ResourceLp"/>, started from the ascent's price
    /// vectors), and the floor-cut LP that <see cref="WithFloorCuts"/> chose the same way, over demand groups at their
    /// members' mean demand. The ascent's groups keep their members' least demand (so that the grouped LP is itself a
    /// bound), and with many distinct pods the grid is coarse: on the family's pinned rows at 10k pods their LP lies 2-5 %
    /// below the LP over the pods themselves, and the ascent is at that grouped optimum (the simplex on the same groups finds
    /// the same value); on small instances the ascent also stops short now and then. The simplex's duals, made feasible,
    /// are valued shape by shape as the ascent's are, so the result is a valid bound whatever the grouping and however far
    /// the simplex got. W and Value stay the ascent's (the greedy's prices), so no plan changes.
    /// </summary>
    public DualBound WithExactLp(PackingInstance x, long maxPivots)
    {
        var (capEff, _, gCount, gTypes, groups) = lp;
        if (groups == 0) return this;
        var stats = new List<ResourceLp.Stats>();
        // One LP (plain, or with the floor cut in the GPU dimension: xi its instance, cap and dem its rows) from the ascent's prices.
        double Lift(PackingInstance xi, long[] cap, long[] dem, double[] start)
        {
            var w = ResourceLp.Solve(x, cap, groups, Means(xi, groupOf, groups, gCount), gCount, gTypes, start, maxPivots, out var st);
            // The anti-affinity term is valid at any feasible prices (AntiAffinityBound), so it is tried at these too.
            double bound = Math.Max(Values(xi, w).Lp, AntiAffinityBound.Compute(xi, cap, w, dem, gCount, gTypes, groups));
            stats.Add(st with { Bound = bound });
            return bound;
        }
        double best = Lift(x, capEff, lp.GDem, W);
        if (floorW is not null)
        {
            var (capQ, demQ) = FloorRows(x, floorQ);
            best = Math.Max(best, Lift(new PackingInstance(x, floorQ), capQ, demQ, floorW));
        }
        var raised = Report(x, best);
        return new DualBound(W, Value, WMax, raised > Reported ? raised : Reported, lp, groupOf, floorQ, floorW) { ExactStats = [.. stats] };
    }

    /// <summary>
    /// Each group's mean demand (over its items). Unlike the least demand the ascent's groups keep, it does not make the
    /// grouped LP a relaxation, but it finds better prices: the prices are valued shape by shape, which is a bound for any.
    /// </summary>
    private static double[] Means(PackingInstance x, int[] groupOf, int groups, double[] gCount)
    {
        const int D = PackingInstance.D;
        var mean = new double[groups * D];
        for (int s = 0; s < x.S; s++)
        {
            int g = groupOf[s];
            if (g < 0) continue;
            int n = x.SItems[s].Length;
            for (int r = 0; r < D; r++) mean[g * D + r] += (double)n * x.SDem[s * D + r];
        }
        for (int g = 0; g < groups; g++) for (int r = 0; r < D; r++) mean[g * D + r] /= gCount[g];
        return mean;
    }

    /// <summary>The LP's capacities and group demands with the GPU dimension carrying ⌊cpu/q⌋ (see <see cref="WithFloorCuts"/>).</summary>
    private (long[] Cap, long[] Dem) FloorRows(PackingInstance x, long q)
    {
        const int D = PackingInstance.D;
        var (capEff, gDem, _, _, groups) = lp;
        var capQ = (long[])capEff.Clone();
        var demQ = (long[])gDem.Clone();
        for (int t = 0; t < x.T; t++) capQ[t * D + 2] = Math.Max(0, x.Cap[t * D]) / q;
        for (int g = 0; g < groups; g++) demQ[g * D + 2] = Math.Max(0, gDem[g * D]) / q;
        return (capQ, demQ);
    }

    public static DualBound Compute(PackingInstance x)
    {
        var (w, value, wmax, lp, capEff, gDem, gCount, gTypes, groups) = Lp(x, out var groupOf);
        double bound = Math.Max(Math.Max(lp, Solitary(x, capEff)), DualFeasibleBound.Compute(x, capEff, w, gDem, gCount, gTypes, groups));
        bound = Math.Max(bound, AntiAffinityBound.Compute(x, capEff, w, gDem, gCount, gTypes, groups));
        return new DualBound(w, value, wmax, Report(x, bound), (capEff, gDem, gCount, gTypes, groups), groupOf);
    }

    private static decimal Report(PackingInstance x, double bound)
    {
        // Float rounding must never lift the bound above the truth.
        decimal reported = bound <= 0 ? 0m : (decimal)(bound * (1 - 1e-9));
        // A cost is a sum of prices: when every price is a whole number of millionths so is the optimum, and
        // the bound may be rounded up to the next millionth (this also removes the float margin above).
        if (reported > 0 && x.P.Types.All(t => decimal.Round(t.PricePerHour, 6) == t.PricePerHour))
            reported = Math.Ceiling(reported * 1_000_000m) / 1_000_000m;
        return reported;
    }

    /// <summary>The LP relaxation's bound by dual ascent: the price vectors, each shape's worth, and the bound.</summary>
    private static (double[] W, double[] Value, double[] WMax, double Lp, long[] CapEff, long[] GDem, double[] GCount, int[][] GTypes, int Groups) Lp(PackingInstance x, out int[] groupOf)
    {
        var capEff = EffectiveCapacities(x);
        int groups = Compress(x, out var gDem, out var gCount, out var gTypes, out groupOf);
        var w = new DualAscent(x, capEff, groups, gDem, gCount, gTypes).Run();
        var (value, wmax, lp) = Values(x, w);
        return (w, value, wmax, lp, capEff, gDem, gCount, gTypes, groups);
    }

    /// <summary>Each shape's worth at the price vectors w (its cheapest allowed type), and the bound they give.</summary>
    private static (double[] Value, double[] WMax, double Lp) Values(PackingInstance x, double[] w)
    {
        const int D = PackingInstance.D;
        int S = x.S, T = x.T;
        var value = new double[S];
        var wmax = new double[D];
        for (int t = 0; t < T; t++) for (int r = 0; r < D; r++) wmax[r] = Math.Max(wmax[r], w[t * D + r]);
        double all = 0, mustNew = 0, existingWorth = 0;
        for (int s = 0; s < S; s++)
        {
            double best = double.PositiveInfinity;
            for (int t = 0; t < T; t++)
            {
                if (!x.TypeOk[s * T + t]) continue;
                double v = 0;
                for (int r = 0; r < D; r++) v += x.SDem[s * D + r] * w[t * D + r];
                best = Math.Min(best, v);
            }
            value[s] = double.IsPositiveInfinity(best) ? 0 : best;
            all += value[s] * x.SItems[s].Length;
            if (!x.AnyBin[s]) mustNew += value[s] * x.SItems[s].Length;
        }
        for (int e = 0; e < x.E; e++) for (int r = 0; r < D; r++) existingWorth += Math.Max(0, x.Free[e * D + r]) * wmax[r];
        return (value, wmax, Math.Max(mustNew, all - existingWorth));
    }

    /// <summary>
    /// The bound raised, where it can be, by floor cuts: whatever shapes share a bin, their cpu sums to at most the
    /// bin's, so Σ⌊cpu/q⌋ over them is at most ⌊Σcpu/q⌋ ≤ ⌊capacity/q⌋ (⌊·⌋ is superadditive) for any q. That is one more
    /// dimension, which the LP lacks and which counts how many large pods a bin can hold: with 4-core pods, a node
    /// of 15.9 cores holds three (the LP packs 3.98), one of 7.9 cores one. The LP is solved again with the unused GPU
    /// dimension carrying ⌊cpu/q⌋ (so only where no shape asks for a GPU), for two q (the largest distinct cpu demands
    /// below half the largest capacity whose pods with at least that much hold a tenth of all cpu), and the best is kept. W and Value stay this LP's.
    /// </summary>
    public DualBound WithFloorCuts(PackingInstance x, int candidates = 2)
    {
        const int D = PackingInstance.D;
        double total = 0;
        var bySize = new SortedDictionary<long, double>();
        for (int s = 0; s < x.S; s++)
        {
            if (!x.AnyType[s]) continue;
            if (x.SDem[s * D + 2] != 0) return this;
            long c = x.SDem[s * D];
            if (c <= 0) continue;
            double all = (double)c * x.SItems[s].Length;
            total += all;
            bySize[c] = bySize.GetValueOrDefault(c) + all;
        }
        if (total <= 0) return this;
        long maxCap = 0;
        for (int t = 0; t < x.T; t++) maxCap = Math.Max(maxCap, x.Cap[t * D]);
        double bestGrouped = 0, above = 0;
        int tried = 0;
        long chosenQ = 0;
        double[]? chosenW = null;
        var (_, _, gCount, gTypes, groups) = lp;
        foreach (var (c, all) in bySize.Reverse())
        {
            above += all;
            if (tried >= candidates) break;
            // A q of at least half the largest capacity only counts solitary pods (Solitary does that); one whose pods
            // with at least q hold less than a tenth of the cpu cannot lift the bound by much.
            if (2 * c >= maxCap || above < 0.1 * total) continue;
            tried++;
            // Each q is judged by the LP over this LP's demand groups (each group's cpu is its members' least, so ⌊cpu/q⌋
            // is theirs too, and the group value is itself a bound); only the best is valued shape by shape.
            var (capQ, demQ) = FloorRows(x, c);
            var w = new DualAscent(x, capQ, groups, demQ, gCount, gTypes).Run();
            double grouped = 0;
            for (int g = 0; g < groups; g++)
            {
                double m = double.PositiveInfinity;
                foreach (int t in gTypes[g])
                {
                    double sum = 0;
                    for (int r = 0; r < D; r++) sum += demQ[g * D + r] * w[t * D + r];
                    m = Math.Min(m, sum);
                }
                if (!double.IsPositiveInfinity(m)) grouped += gCount[g] * m;
            }
            if (chosenW is null || grouped > bestGrouped) { bestGrouped = grouped; chosenQ = c; chosenW = w; }
        }
        if (chosenW is null) return this;
        // Valued shape by shape: each shape's demand is at least its group's, so without existing bins this is at least
        // the grouped value, and with them it is the one that is a bound.
        var raised = Report(x, Values(new PackingInstance(x, chosenQ), chosenW).Lp);
        return new DualBound(W, Value, WMax, raised > Reported ? raised : Reported, lp, groupOf, chosenQ, chosenW);
    }

    private static long[] EffectiveCapacities(PackingInstance x)
    {
        const int D = PackingInstance.D;
        var gcd = new long[D];
        for (int s = 0; s < x.S; s++)
        {
            if (!x.AnyType[s]) continue;
            for (int r = 0; r < D; r++) gcd[r] = Gcd(gcd[r], x.SDem[s * D + r]);
        }
        var cap = new long[x.T * D];
        for (int t = 0; t < x.T; t++)
            for (int r = 0; r < D; r++)
                cap[t * D + r] = gcd[r] > 1 ? x.Cap[t * D + r] / gcd[r] * gcd[r] : x.Cap[t * D + r];
        return cap;
    }

    private static long Gcd(long a, long b)
    {
        a = Math.Abs(a); b = Math.Abs(b);
        while (b != 0) (a, b) = (b, a % b);
        return a;
    }

    /// <summary>
    /// Items that each take more than half of one dimension of every type they may use can never share a bin;
    /// nor can members of one anti-affinity group. Each then needs a bin of its own, at least the cheapest it may use.
    /// </summary>
    private static double Solitary(PackingInstance x, long[] capEff)
    {
        const int D = PackingInstance.D;
        var perDim = new double[D];
        var perGroup = new Dictionary<int, double>();
        for (int s = 0; s < x.S; s++)
        {
            if (!x.AnyType[s] || x.AnyBin[s]) continue;
            double cheapest = double.PositiveInfinity;
            for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) cheapest = Math.Min(cheapest, x.Price[t]);
            int n = x.SItems[s].Length;
            for (int r = 0; r < D; r++)
            {
                long need = x.SDem[s * D + r];
                if (need <= 0) continue;
                bool big = true;
                for (int t = 0; t < x.T && big; t++) if (x.TypeOk[s * x.T + t] && 2 * need <= capEff[t * D + r]) big = false;
                if (big) perDim[r] += cheapest * n;
            }
            if (x.SAa[s] >= 0) perGroup[x.SAa[s]] = perGroup.GetValueOrDefault(x.SAa[s]) + cheapest * n;
        }
        double best = perDim.Max();
        foreach (var v in perGroup.Values) best = Math.Max(best, v);
        return best;
    }

    /// <summary>
    /// Shapes for the search of w (their number is returned), with demands rounded down onto a geometric grid (the group keeps the
    /// component-wise minimum, so it never overstates anything) until there are few enough to iterate over.
    /// </summary>
    private static int Compress(PackingInstance x, out long[] gDem, out double[] gCount, out int[][] gTypes, out int[] groupOf)
    {
        const int D = PackingInstance.D, Target = 300;
        int S = x.S, T = x.T;
        var sig = new int[S];
        var sigIndex = new Dictionary<string, int>();
        var sigTypes = new List<int[]>();
        var row = new char[T];
        for (int s = 0; s < S; s++)
        {
            if (!x.AnyType[s]) { sig[s] = -1; continue; }
            for (int t = 0; t < T; t++) row[t] = x.TypeOk[s * T + t] ? '1' : '0';
            var key = new string(row);
            if (!sigIndex.TryGetValue(key, out int id))
            {
                id = sigTypes.Count; sigIndex[key] = id;
                var ts = new List<int>();
                for (int t = 0; t < T; t++) if (x.TypeOk[s * T + t]) ts.Add(t);
                sigTypes.Add([.. ts]);
            }
            sig[s] = id;
        }
        // Logarithms once per shape; the grid is searched on a fixed subsample (every stride-th shape) and only the
        // final grid is applied to all shapes, so that many distinct shapes cost one pass, not twelve.
        var logs = new double[S * D];
        for (int s = 0; s < S * D; s++) logs[s] = x.SDem[s] > 0 ? Math.Log(x.SDem[s]) : 0;
        long Bucket(int s, int r, double lg) => x.SDem[s * D + r] <= 0 ? -1 : lg == 0 ? x.SDem[s * D + r] : (long)Math.Floor(logs[s * D + r] / lg);
        (int, long, long, long, long) Key(int s, double lg) => (sig[s], Bucket(s, 0, lg), Bucket(s, 1, lg), Bucket(s, 2, lg), Bucket(s, 3, lg));
        int stride = Math.Max(1, S / (8 * Target));
        double step = 0;
        Dictionary<(int, long, long, long, long), int> map = [];
        for (int attempt = 0; attempt < 16; attempt++)
        {
            double lg = step > 0 ? Math.Log(1 + step) : 0;
            bool sampled = stride > 1 && attempt < 15;
            map = [];
            for (int s = 0; s < S; s += sampled ? stride : 1)
            {
                if (sig[s] < 0) continue;
                map.TryAdd(Key(s, lg), map.Count);
                if (map.Count > Target) break;
            }
            if (map.Count <= Target && sampled)
            {
                // The grid the sample accepts, on every shape: at most twice the target, else coarser.
                map = [];
                for (int s = 0; s < S; s++) if (sig[s] >= 0) map.TryAdd(Key(s, lg), map.Count);
                if (map.Count <= 2 * Target) break;
            }
            else if (map.Count <= Target) break;
            step = step == 0 ? 0.002 : step * 2;
        }
        int G = map.Count;
        gDem = new long[G * D]; gCount = new double[G]; gTypes = new int[G][];
        Array.Fill(gDem, long.MaxValue);
        double lg2 = step > 0 ? Math.Log(1 + step) : 0;
        groupOf = new int[S];
        for (int s = 0; s < S; s++)
        {
            groupOf[s] = -1;
            if (sig[s] < 0) continue;
            int g = groupOf[s] = map[Key(s, lg2)];
            for (int r = 0; r < D; r++) gDem[g * D + r] = Math.Min(gDem[g * D + r], x.SDem[s * D + r]);
            gCount[g] += x.SItems[s].Length;
            gTypes[g] = sigTypes[sig[s]];
        }
        return G;
    }
}
