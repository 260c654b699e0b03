namespace Karpetrack;

/// <summary>
/// The LP relaxation of one pricing knapsack: max Σ_j value_j·a_j subject to Σ_j demand_j·a_j ≤ capacity in each
/// dimension and 0 ≤ a_j ≤ bound_j, by the bounded-variable primal simplex on at most four rows (each scaled to a
/// capacity of 1). Its duals μ make the Lagrangian bound of <see cref="PatternPricing"/> equal to the LP bound at the
/// root. The iteration count is capped (Bland's rule in the second half against cycling): a capped answer's μ is still
/// non-negative, and any such μ gives a valid, if weaker, bound.
/// </summary>
internal sealed class KnapsackLp
{
    private const int D = PackingInstance.D;
    private const double Eps = 1e-12;
    private readonly int[] rows = new int[D];
    private readonly double[] binv = new double[D * D];
    private readonly int[] basic = new int[D];      // structural j, or n + i for row i's slack
    private readonly double[] xb = new double[D];
    private readonly double[] dual = new double[D];
    private readonly double[] alpha = new double[D];
    private double[] a = [];                         // k×n, the scaled demands
    private bool[] atUpper = [];
    private bool[] isBasic = [];

    /// <summary>Writes the duals, per dimension in price per unit of capacity, into <paramref name="mu"/>.</summary>
    public void Solve(PackingInstance x, int t, long[] gDem, int[] cand, long[] ub, double[] val, int n, double[] mu)
    {
        Array.Clear(mu);
        int k = 0;
        for (int r = 0; r < D; r++)
        {
            long cap = x.Cap[t * D + r];
            if (cap <= 0) continue;
            double total = 0;
            for (int j = 0; j < n; j++) total += (double)ub[j] * gDem[cand[j] * D + r];
            if (total > cap) rows[k++] = r;          // a dimension nothing can fill never binds
        }
        if (k == 0) return;
        if (a.Length < k * n) a = new double[k * n];
        if (atUpper.Length < n + D) { atUpper = new bool[n + D]; isBasic = new bool[n + D]; }
        Array.Clear(atUpper, 0, n + D);
        Array.Clear(isBasic, 0, n + D);
        for (int i = 0; i < k; i++)
        {
            double cap = x.Cap[t * D + rows[i]];
            for (int j = 0; j < n; j++) a[i * n + j] = gDem[cand[j] * D + rows[i]] / cap;
        }
        Array.Clear(binv);
        for (int i = 0; i < k; i++) { binv[i * D + i] = 1; basic[i] = n + i; isBasic[n + i] = true; xb[i] = 1; }
        int limit = 4 * n + 40;
        for (int iter = 0; iter < limit; iter++)
        {
            Duals(k, n, val);
            int q = Entering(k, n, val, bland: iter > limit / 2, out bool up);
            if (q < 0) break;
            Step(k, n, ub, q, up);
        }
        Duals(k, n, val);
        for (int i = 0; i < k; i++) mu[rows[i]] = Math.Max(0, dual[i]) / x.Cap[t * D + rows[i]];
    }

    private double Cost(int v, int n, double[] val) => v < n ? val[v] : 0;
    private double Col(int i, int v, int n) => v < n ? a[i * n + v] : (v - n == i ? 1 : 0);

    private void Duals(int k, int n, double[] val)
    {
        for (int i = 0; i < k; i++)
        {
            double s = 0;
            for (int l = 0; l < k; l++) s += Cost(basic[l], n, val) * binv[l * D + i];
            dual[i] = s;
        }
    }

    /// <summary>A nonbasic variable whose reduced profit says move it (up from its lower bound, down from its upper); -1 at the optimum.</summary>
    private int Entering(int k, int n, double[] val, bool bland, out bool up)
    {
        int q = -1;
        double best = 1e-12;
        up = true;
        for (int v = 0; v < n + k; v++)
        {
            if (isBasic[v]) continue;
            double rp = Cost(v, n, val);
            for (int i = 0; i < k; i++) rp -= dual[i] * Col(i, v, n);
            double score = atUpper[v] ? -rp : rp;
            if (score <= best) continue;
            q = v; up = !atUpper[v];
            if (bland) return q;
            best = score;
        }
        return q;
    }

    private void Step(int k, int n, long[] ub, int q, bool up)
    {
        for (int i = 0; i < k; i++)
        {
            double s = 0;
            for (int l = 0; l < k; l++) s += binv[i * D + l] * Col(l, q, n);
            alpha[i] = s;
        }
        double dir = up ? 1 : -1;
        double theta = q < n ? ub[q] : double.PositiveInfinity;
        int leave = -1;
        bool leaveToUpper = false;
        for (int i = 0; i < k; i++)
        {
            double delta = -dir * alpha[i];            // change of basic i per unit of the step
            if (delta < -Eps)
            {
                double lim = Math.Max(0, xb[i]) / -delta;
                if (lim < theta) { theta = lim; leave = i; leaveToUpper = false; }
            }
            else if (delta > Eps && basic[i] < n)
            {
                double lim = Math.Max(0, ub[basic[i]] - xb[i]) / delta;
                if (lim < theta) { theta = lim; leave = i; leaveToUpper = true; }
            }
        }
        if (double.IsPositiveInfinity(theta)) return;   // cannot happen: every row is bounded
        for (int i = 0; i < k; i++) xb[i] -= dir * theta * alpha[i];
        if (leave < 0) { atUpper[q] = up; return; }     // a bound flip: the basis stays
        int old = basic[leave];
        isBasic[old] = false;
        atUpper[old] = leaveToUpper;
        basic[leave] = q;
        isBasic[q] = true;
        atUpper[q] = false;
        xb[leave] = up ? theta : ub[q] - theta;
        double piv = alpha[leave];
        for (int l = 0; l < k; l++) binv[leave * D + l] /= piv;
        for (int i = 0; i < k; i++)
        {
            if (i == leave || alpha[i] == 0) continue;
            double f = alpha[i];
            for (int l = 0; l < k; l++) binv[i * D + l] -= f * binv[leave * D + l];
        }
    }
}
