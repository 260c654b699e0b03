namespace Karpetrack;

/// <summary>
/// An upper bound on a pricing knapsack that keeps one dimension whole: the others are priced into the values by
/// Lagrangian multipliers (value − μ·demand, plus μ·capacity: valid for any μ ≥ 0), and the one kept is solved exactly
/// by dynamic programming over its units. The LP bound lets a bin be filled by a fraction of an item; where items are
/// large against the bin in the kept dimension (two 4-core pods do not fit on a node of 7.8 cores), this bound does not.
/// Units: the gcd of the demands when that leaves few enough, else the capacity over a fixed number of units with demands
/// rounded down (a relaxation, so still an upper bound). The multiplier of the first relaxed dimension that binds is
/// searched (the bound is convex in it); the others stay at their LP values.
/// </summary>
internal sealed class KnapsackDpBound
{
    private const int D = PackingInstance.D;
    private const int MaxUnits = 1024;
    private double[] best = [];

    /// <summary>The bound keeping dimension <paramref name="keep"/> whole; +∞ when it cannot be formed.</summary>
    public double Bound(PackingInstance x, int t, int keep, long[] gDem, int[] cand, long[] ub, double[] val, int n, double[] lpMu)
    {
        long cap = x.Cap[t * D + keep];
        if (cap <= 0) return double.PositiveInfinity;
        long gcd = 0;
        for (int j = 0; j < n; j++) gcd = Gcd(gcd, gDem[cand[j] * D + keep]);
        long unit = gcd > 0 && cap / gcd <= MaxUnits ? gcd : Math.Max(1, cap / MaxUnits);
        int K = (int)(cap / unit);
        if (best.Length < K + 1) best = new double[K + 1];
        // The relaxed dimension whose multiplier is searched: the one the LP prices highest relative to its capacity.
        int search = -1;
        double share = 0;
        for (int r = 0; r < D; r++)
            if (r != keep && lpMu[r] * x.Cap[t * D + r] > share) { share = lpMu[r] * x.Cap[t * D + r]; search = r; }
        var mu = (double[])lpMu.Clone();
        mu[keep] = 0;
        double Eval(double m)
        {
            if (search >= 0) mu[search] = m;
            return Solve(x, t, keep, gDem, cand, ub, val, n, mu, unit, K);
        }
        if (search < 0) return Eval(0);
        // Golden-section search on [0, 2·LP value]: the bound is convex in the multiplier.
        double lo = 0, hi = 2 * lpMu[search];
        const double phi = 0.6180339887498949;
        double m1 = hi - phi * (hi - lo), m2 = lo + phi * (hi - lo);
        double f1 = Eval(m1), f2 = Eval(m2), bestF = Math.Min(Math.Min(f1, f2), Eval(lpMu[search]));
        for (int it = 0; it < 10; it++)
        {
            if (f1 <= f2) { hi = m2; m2 = m1; f2 = f1; m1 = hi - phi * (hi - lo); f1 = Eval(m1); }
            else { lo = m1; m1 = m2; f1 = f2; m2 = lo + phi * (hi - lo); f2 = Eval(m2); }
            bestF = Math.Min(bestF, Math.Min(f1, f2));
        }
        return bestF;
    }

    /// <summary>μ·(capacities of the relaxed dimensions) + the exact bounded knapsack over the kept one with values val − μ·demand.</summary>
    private double Solve(PackingInstance x, int t, int keep, long[] gDem, int[] cand, long[] ub, double[] val, int n, double[] mu, long unit, int K)
    {
        double constant = 0;
        for (int r = 0; r < D; r++) if (r != keep) constant += mu[r] * x.Cap[t * D + r];
        Array.Clear(best, 0, K + 1);
        double free = 0;
        for (int j = 0; j < n; j++)
        {
            double v = val[j];
            for (int r = 0; r < D; r++) if (r != keep) v -= mu[r] * gDem[cand[j] * D + r];
            if (v <= 0) continue;
            long w = gDem[cand[j] * D + keep] / unit;
            if (w <= 0) { free += v * ub[j]; continue; }
            long copies = Math.Min(ub[j], K / w);
            // Binary splitting: chunks of 1, 2, 4, … copies make every count up to `copies` a sum of distinct chunks.
            for (long chunk = 1; copies > 0; chunk *= 2)
            {
                long c = Math.Min(chunk, copies);
                copies -= c;
                int cw = (int)(c * w);
                double cv = c * v;
                for (int k = K; k >= cw; k--)
                {
                    double cand2 = best[k - cw] + cv;
                    if (cand2 > best[k]) best[k] = cand2;
                }
            }
        }
        return constant + free + best[K];
    }

    private static long Gcd(long a, long b)
    {
        while (b != 0) (a, b) = (b, a % b);
        return Math.Abs(a);
    }
}
