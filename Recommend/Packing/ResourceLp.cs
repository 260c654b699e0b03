using System.Buffers;

namespace Karpetrack;

/// <summary>
/// The resource LP of <see cref="DualBound"/> solved by the revised primal simplex (see <see cref="DualBound.WithExactLp"/>
/// for why and where). Primal: min Σ_t price_t·x_t subject to Σ_t y_gt = n_g per
/// demand group g (over the types its class allows), Σ_g dem_gr·y_gt ≤ cap_tr·x_t per type and dimension (scaled by
/// cap_tr), all variables ≥ 0. Rows: the groups and the priced (type, dimension) pairs; an explicit dense basis inverse.
/// The basis starts from a primal solution: every group on its cheapest type under the ascent's prices, each type
/// bought for its binding dimension. The type rows' right-hand sides are perturbed by a few parts in 10⁹ against
/// cycling. Only the duals are used, and they are made dual feasible before anyone sees them: w_tr = max(0, −π_tr) /
/// cap_tr, each type's vector scaled down until capacity·w ≤ price. So the bound that <see cref="DualBound"/> values
/// with them is valid whether or not the simplex reached its optimum (pivot budget, rounding).
/// </summary>
internal static class ResourceLp
{
    private const int D = PackingInstance.D;

    public readonly record struct Stats(int Rows, int Columns, long Pivots, bool Optimal, double Bound = 0);

    /// <summary>Rows (demand groups plus priced type × dimension pairs) above which the simplex is not run (~5 MB inverse).</summary>
    public const int MaxRows = 800;

    /// <summary>Price vectors w (T×D), dual feasible, from the simplex's duals; <paramref name="start"/> is the ascent's.</summary>
    public static double[] Solve(PackingInstance x, long[] capEff, int G, double[] gDem, double[] gCount, int[][] gTypes, double[] start, long maxPivots, out Stats stats)
    {
        int T = x.T;
        // Rows: groups 0..G-1, then one per (type, dimension) that some group allowed on the type asks for.
        var rowOf = new int[T * D];
        Array.Fill(rowOf, -1);
        var need = new bool[T * D];
        for (int g = 0; g < G; g++)
            foreach (int t in gTypes[g])
                for (int r = 0; r < D; r++) if (gDem[g * D + r] > 0) need[t * D + r] = true;
        var rowType = new List<int>();
        var rowDim = new List<int>();
        for (int t = 0; t < T; t++)
            for (int r = 0; r < D; r++)
                if (need[t * D + r] && capEff[t * D + r] > 0) { rowOf[t * D + r] = G + rowType.Count; rowType.Add(t); rowDim.Add(r); }
        int R = rowType.Count, m = G + R;
        // Columns: y_(g,t) for each allowed pair (ny of them), then x_t, then the type rows' slacks.
        var yStart = new int[G + 1];
        for (int g = 0; g < G; g++) yStart[g + 1] = yStart[g] + gTypes[g].Length;
        int ny = yStart[G], n = ny + T + R;
        var rhs = new double[m];
        for (int g = 0; g < G; g++) rhs[g] = gCount[g];
        for (int k = 0; k < R; k++) rhs[G + k] = 1e-9 * (1 + (k * 7919 % 997) / 997.0);

        // The dense inverse is m² and each pivot O(m²): past MaxRows (hundreds of offered types) keep the ascent's prices.
        if (m > MaxRows) { stats = new Stats(m, n, 0, false); return start; }
        var binv = ArrayPool<double>.Shared.Rent(m * m);
        try
        {
            var lp = new Simplex(x, capEff, G, gDem, gCount, gTypes, rowOf, rowType.ToArray(), rowDim.ToArray(), yStart, rhs, binv, m, n);
            lp.Crash(start);
            bool optimal = lp.Run(maxPivots);
            stats = new Stats(m, n, lp.Pivots, optimal);
            var w = lp.FeasibleW();
            // A drifted inverse could leave a NaN or an infinity: then the ascent's prices, whose bound stands.
            foreach (var v in w) if (!double.IsFinite(v)) { stats = stats with { Optimal = false }; return start; }
            return w;
        }
        finally { ArrayPool<double>.Shared.Return(binv); }
    }

    private sealed class Simplex
    {
        private readonly PackingInstance x;
        private readonly long[] capEff;
        private readonly double[] gDem;
        private readonly double[] gCount;
        private readonly int[][] gTypes;
        private readonly int[] rowOf, rowType, rowDim, yStart;
        private readonly double[] rhs, binv;
        private readonly int G, R, T, m, n, ny;
        private readonly int[] basic;        // per basis position: a column
        private readonly int[] position;     // per column: its basis position, or -1
        private readonly double[] xb, pi, d, rowPrice;
        private readonly int[] colGroup, colType;  // per y column
        private readonly int[] colRows = new int[1 + D];
        private readonly double[] colVals = new double[1 + D];
        private readonly double tol;
        public long Pivots;

        public Simplex(PackingInstance x, long[] capEff, int G, double[] gDem, double[] gCount, int[][] gTypes, int[] rowOf, int[] rowType, int[] rowDim, int[] yStart, double[] rhs, double[] binv, int m, int n)
        {
            this.x = x; this.capEff = capEff; this.G = G; this.gDem = gDem; this.gCount = gCount; this.gTypes = gTypes;
            this.rowOf = rowOf; this.rowType = rowType; this.rowDim = rowDim; this.yStart = yStart; this.rhs = rhs; this.binv = binv;
            this.m = m; this.n = n; R = rowType.Length; T = x.T; ny = yStart[G];
            basic = new int[m];
            position = new int[n];
            Array.Fill(position, -1);
            xb = new double[m]; pi = new double[m]; d = new double[m];
            rowPrice = new double[T * D];
            colGroup = new int[ny]; colType = new int[ny];
            for (int g = 0; g < G; g++)
                for (int i = 0; i < gTypes[g].Length; i++) { colGroup[yStart[g] + i] = g; colType[yStart[g] + i] = gTypes[g][i]; }
            double maxPrice = 0;
            for (int t = 0; t < T; t++) maxPrice = Math.Max(maxPrice, x.Price[t]);
            tol = 1e-11 * Math.Max(maxPrice, 1e-12);
        }

        private int XCol(int t) => ny + t;
        private int SlackCol(int k) => ny + T + k;

        /// <summary>The entries of column j (rows and values); returns their number.</summary>
        private int Entries(int j)
        {
            int c = 0;
            if (j < ny)
            {
                int g = colGroup[j], t = colType[j];
                colRows[c] = g; colVals[c++] = 1;
                for (int r = 0; r < D; r++)
                {
                    int row = rowOf[t * D + r];
                    if (row >= 0 && gDem[g * D + r] > 0) { colRows[c] = row; colVals[c++] = gDem[g * D + r] / capEff[t * D + r]; }
                }
            }
            else if (j < ny + T)
            {
                int t = j - ny;
                for (int r = 0; r < D; r++) if (rowOf[t * D + r] >= 0) { colRows[c] = rowOf[t * D + r]; colVals[c++] = -1; }
            }
            else { colRows[c] = G + (j - ny - T); colVals[c++] = 1; }
            return c;
        }

        private double Cost(int j) => j >= ny && j < ny + T ? x.Price[j - ny] : 0;

        /// <summary>
        /// The starting basis: every group on its cheapest type at the prices <paramref name="w"/>, each loaded type bought
        /// for its binding dimension (x_t basic in that row, the other rows' slacks basic), unloaded types left unbought.
        /// Its inverse is written down directly (block triangular).
        /// </summary>
        public void Crash(double[] w)
        {
            Array.Clear(binv, 0, m * m);
            var on = new int[G];
            var load = new double[R];
            for (int g = 0; g < G; g++)
            {
                int bt = -1; double bv = double.PositiveInfinity;
                for (int i = 0; i < gTypes[g].Length; i++)
                {
                    int t = gTypes[g][i];
                    double v = 0;
                    for (int r = 0; r < D; r++) v += gDem[g * D + r] * w[t * D + r];
                    if (bt < 0 || v < bv - 1e-15 * bv || (v <= bv && x.Price[gTypes[g][bt]] > x.Price[t])) { bv = v; bt = i; }
                }
                on[g] = gTypes[g][bt];
                Place(g, yStart[g] + bt);
                binv[g * m + g] = 1;
                for (int r = 0; r < D; r++)
                {
                    int row = rowOf[on[g] * D + r];
                    if (row >= 0) load[row - G] += gCount[g] * gDem[g * D + r] / capEff[on[g] * D + r];
                }
            }
            var bind = new int[T];
            Array.Fill(bind, -1);
            for (int k = 0; k < R; k++)
            {
                int t = rowType[k];
                double v = load[k] - rhs[G + k];
                if (v > 0 && (bind[t] < 0 || v > load[bind[t]] - rhs[G + bind[t]])) bind[t] = k;
            }
            for (int k = 0; k < R; k++)
            {
                int t = rowType[k], row = G + k;
                if (bind[t] == k) Place(row, XCol(t)); else Place(row, SlackCol(k));
            }
            // The inverse from B·z = b: y_g = b_g; x_t = Σ_g a_gtb·b_g − b_b in its binding row b; a slack of the same type
            // z_k = b_k − Σ_g a_gtk·b_g + x_t (without the x_t terms when t is unbought), over the groups on t.
            for (int g = 0; g < G; g++)
            {
                int t = on[g];
                for (int r = 0; r < D; r++)
                {
                    int row = rowOf[t * D + r];
                    if (row < 0) continue;
                    double a = gDem[g * D + r] / capEff[t * D + r];
                    int k = row - G;
                    if (bind[t] >= 0)
                    {
                        int b = G + bind[t];
                        int rb = rowDim[bind[t]];
                        double ab = gDem[g * D + rb] / capEff[t * D + rb];
                        if (row == b) binv[b * m + g] = ab;
                        else binv[row * m + g] = ab - a;
                    }
                    else binv[row * m + g] = -a;
                }
            }
            for (int k = 0; k < R; k++)
            {
                int t = rowType[k], row = G + k;
                if (bind[t] < 0) { binv[row * m + row] = 1; continue; }
                int b = G + bind[t];
                if (row == b) binv[b * m + b] = -1;
                else { binv[row * m + row] = 1; binv[row * m + b] = -1; }
            }
            Refresh();
        }

        private void Place(int pos, int col) { basic[pos] = col; position[col] = pos; }

        public bool Run(long maxPivots)
        {
            for (long it = 0; it < maxPivots; it++)
            {
                int q = Entering(out double rc);
                if (q < 0) { Refresh(); if (Entering(out _) < 0) return true; continue; }
                Column(q);
                int r = Leaving();
                if (r < 0) { Refresh(); return false; }
                Pivot(r, q, rc);
                if (Pivots % 200 == 0) Refresh();
            }
            Refresh();
            return false;
        }

        /// <summary>Dantzig's rule over all nonbasic columns.</summary>
        private int Entering(out double best)
        {
            best = -tol;
            int q = -1;
            // π of type rows, per (type, dimension), divided by capacity: a group's reduced cost is −π_g − Σ_r dem·that.
            Array.Clear(rowPrice);
            for (int k = 0; k < R; k++) rowPrice[rowType[k] * D + rowDim[k]] = pi[G + k] / capEff[rowType[k] * D + rowDim[k]];
            for (int g = 0; g < G; g++)
            {
                var ts = gTypes[g];
                for (int i = 0; i < ts.Length; i++)
                {
                    int j = yStart[g] + i;
                    if (position[j] >= 0) continue;
                    int t = ts[i];
                    double rc = -pi[g];
                    for (int r = 0; r < D; r++) rc -= gDem[g * D + r] * rowPrice[t * D + r];
                    if (rc < best) { best = rc; q = j; }
                }
            }
            for (int t = 0; t < T; t++)
            {
                int j = XCol(t);
                if (position[j] >= 0) continue;
                double rc = x.Price[t];
                bool any = false;
                for (int r = 0; r < D; r++) if (rowOf[t * D + r] >= 0) { rc += pi[rowOf[t * D + r]]; any = true; }
                if (any && rc < best) { best = rc; q = j; }
            }
            for (int k = 0; k < R; k++)
            {
                int j = SlackCol(k);
                if (position[j] >= 0) continue;
                double rc = -pi[G + k];
                if (rc < best) { best = rc; q = j; }
            }
            return q;
        }

        private void Column(int q)
        {
            int c = Entries(q);
            for (int i = 0; i < m; i++)
            {
                int o = i * m;
                double s = 0;
                for (int k = 0; k < c; k++) s += binv[o + colRows[k]] * colVals[k];
                d[i] = s;
            }
        }

        private int Leaving() => DenseBasis.Leaving(d.AsSpan(0, m), xb.AsSpan(0, m));

        private void Pivot(int r, int q, double rc)
        {
            Pivots++;
            DenseBasis.Pivot(binv, m, xb, pi, d, r, rc);
            position[basic[r]] = -1;
            Place(r, q);
        }

        /// <summary>The basic solution and the duals again from the inverse, against the drift of the updates.</summary>
        private void Refresh()
        {
            for (int i = 0; i < m; i++)
            {
                int o = i * m;
                double s = 0;
                for (int k = 0; k < m; k++) s += binv[o + k] * rhs[k];
                xb[i] = s;
            }
            Array.Clear(pi);
            for (int i = 0; i < m; i++)
            {
                double c = Cost(basic[i]);
                if (c == 0) continue;
                int o = i * m;
                for (int k = 0; k < m; k++) pi[k] += c * binv[o + k];
            }
        }

        /// <summary>w from the duals, made feasible: nonnegative, and capacity·w ≤ price per type.</summary>
        public double[] FeasibleW()
        {
            var w = new double[T * D];
            for (int k = 0; k < R; k++)
            {
                int t = rowType[k], r = rowDim[k];
                w[t * D + r] = Math.Max(0, -pi[G + k]) / capEff[t * D + r];
            }
            for (int t = 0; t < T; t++)
            {
                double sum = 0;
                for (int r = 0; r < D; r++) sum += capEff[t * D + r] * w[t * D + r];
                if (sum > x.Price[t] && sum > 0) for (int r = 0; r < D; r++) w[t * D + r] *= x.Price[t] / sum;
            }
            return w;
        }
    }
}
