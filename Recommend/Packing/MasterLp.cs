namespace Karpetrack;

/// <summary>
/// The master LP of column generation: min Σ cost_j·λ_j subject to Σ_j a_ij·λ_j ≥ rhs_i, λ ≥ 0, by the revised primal
/// simplex with an explicit dense basis inverse (rows are the few hundred demand groups, so a pivot is a few hundred
/// thousand multiply-adds; most rows of an update are skipped as the entering column is sparse in the basis). The basis
/// starts as one single-item column per row, which is feasible. Dantzig's rule; the right-hand side is perturbed by a
/// few parts in 10⁸ against cycling (the LP is very degenerate), which the callers' bounds never rely on: they
/// only use the duals, checked for feasibility by exact pricing.
/// </summary>
internal sealed class MasterLp
{
    private readonly int m;
    private readonly double[] rhs;
    private readonly List<double> cost = [];
    private readonly List<int[]> colRows = [];
    private readonly List<double[]> colVals = [];
    private readonly List<bool> inBasis = [];
    private readonly int[] basic;        // per row: a column, or -1 - i for row i's surplus
    private readonly bool[] surplusIn;   // per row: its surplus is basic
    private readonly double[] binv;      // m×m, row-major
    private readonly double[] xb;
    private readonly double[] y;
    private readonly double[] d;
    private readonly double tol;

    /// <summary>Rows with their right-hand sides and, per row, the cost of the single-item column that starts the basis.</summary>
    public MasterLp(double[] rhs, double[] singleCost)
    {
        m = rhs.Length;
        this.rhs = new double[m];
        for (int i = 0; i < m; i++) this.rhs[i] = rhs[i] * (1 + 1e-8 * ((i * 7919 % 997) + 1) / 997.0);
        basic = new int[m];
        surplusIn = new bool[m];
        binv = new double[(long)m * m];
        xb = new double[m];
        y = new double[m];
        d = new double[m];
        double maxCost = 0;
        for (int i = 0; i < m; i++)
        {
            AddColumn(singleCost[i], [i], [1]);
            basic[i] = i; inBasis[i] = true;
            binv[(long)i * m + i] = 1;
            xb[i] = this.rhs[i];
            y[i] = singleCost[i];
            maxCost = Math.Max(maxCost, singleCost[i]);
        }
        tol = 1e-9 * Math.Max(maxCost, 1e-12);
    }

    public int Rows => m;
    public int Columns => cost.Count;
    public long Pivots { get; private set; }
    /// <summary>The duals of the current basis (≥ 0 at optimality up to rounding).</summary>
    public ReadOnlySpan<double> Duals => y;
    public double Cost(int j) => cost[j];
    public int[] ColumnRows(int j) => colRows[j];
    public double[] ColumnValues(int j) => colVals[j];

    public int AddColumn(double c, int[] rows, double[] vals)
    {
        cost.Add(c); colRows.Add(rows); colVals.Add(vals); inBasis.Add(false);
        return cost.Count - 1;
    }

    /// <summary>The objective of the current basis.</summary>
    public double Objective()
    {
        double z = 0;
        for (int i = 0; i < m; i++) if (basic[i] >= 0) z += cost[basic[i]] * xb[i];
        return z;
    }

    /// <summary>The value of each column in the current basic solution (0 for nonbasic ones).</summary>
    public double[] Primal()
    {
        var v = new double[cost.Count];
        for (int i = 0; i < m; i++) if (basic[i] >= 0) v[basic[i]] = Math.Max(0, xb[i]);
        return v;
    }

    /// <summary>Pivots until no column prices out or <paramref name="maxPivots"/> are spent; true when optimal.</summary>
    public bool Solve(long maxPivots)
    {
        for (long k = 0; k < maxPivots; k++)
        {
            int q = Entering(out double rc, out int surplus);
            if (q < 0 && surplus < 0) { Refresh(); return true; }
            Column(q, surplus);
            int r = Leaving();
            if (r < 0) { Refresh(); return false; }
            Pivot(r, q >= 0 ? q : -1 - surplus, rc);
        }
        Refresh();
        return false;
    }

    private int Entering(out double best, out int surplus)
    {
        best = -tol;
        int q = -1;
        surplus = -1;
        for (int j = 0; j < cost.Count; j++)
        {
            if (inBasis[j]) continue;
            var rows = colRows[j];
            var vals = colVals[j];
            double rc = cost[j];
            for (int k = 0; k < rows.Length; k++) rc -= y[rows[k]] * vals[k];
            if (rc < best) { best = rc; q = j; }
        }
        // A surplus column is -e_i at no cost: its reduced cost is y_i.
        for (int i = 0; i < m; i++)
            if (y[i] < best && !surplusIn[i]) { best = y[i]; surplus = i; q = -1; }
        return q;
    }

    /// <summary>d = B⁻¹·a for the entering column (or surplus).</summary>
    private void Column(int q, int surplus)
    {
        if (q >= 0)
        {
            Array.Clear(d);
            var rows = colRows[q];
            var vals = colVals[q];
            for (int i = 0; i < m; i++)
            {
                long o = (long)i * m;
                double s = 0;
                for (int k = 0; k < rows.Length; k++) s += binv[o + rows[k]] * vals[k];
                d[i] = s;
            }
        }
        else
            for (int i = 0; i < m; i++) d[i] = -binv[(long)i * m + surplus];
    }

    private int Leaving() => DenseBasis.Leaving(d.AsSpan(0, m), xb.AsSpan(0, m));

    private void Pivot(int r, int entering, double rc)
    {
        Pivots++;
        DenseBasis.Pivot(binv, m, xb, y, d, r, rc);
        int old = basic[r];
        if (old >= 0) inBasis[old] = false; else surplusIn[-1 - old] = false;
        basic[r] = entering;
        if (entering >= 0) inBasis[entering] = true; else surplusIn[-1 - entering] = true;
    }

    /// <summary>Recomputes the basic solution and the duals from the inverse, against the drift of the incremental updates.</summary>
    private void Refresh()
    {
        for (int i = 0; i < m; i++)
        {
            long o = (long)i * m;
            double s = 0;
            for (int k = 0; k < m; k++) s += binv[o + k] * rhs[k];
            xb[i] = s;
        }
        Array.Clear(y);
        for (int i = 0; i < m; i++)
        {
            double c = basic[i] >= 0 ? cost[basic[i]] : 0;
            if (c == 0) continue;
            long o = (long)i * m;
            for (int k = 0; k < m; k++) y[k] += c * binv[o + k];
        }
    }
}
