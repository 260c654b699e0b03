namespace Karpetrack;

/// <summary>
/// Bin by bin, with work that does not grow with the number of distinct shapes (the shapes are searched through
/// <see cref="ShapeColumns"/>). A bin is filled one item at a time with the candidate of largest dot product with the
/// normalised residual (bin-centric "DotProduct", Panigrahy et al. 2011); its type is the one whose dry-run fill
/// absorbs the largest share of the demand per dollar, re-examined every few bins, whenever the largest remaining
/// shape changes much and (up to <see cref="PackingOptions.ChoicePortfolioItems"/> items) whenever its constraint row
/// (the new bins its class allows) changes. With
/// <see cref="PackingOptions.BalancedFill"/> a bin instead keeps its fill on the line to its own full corner, so it
/// ends full in cpu and memory together.
/// </summary>
internal sealed class ColumnGreedy
{
    private const int D = PackingInstance.D;
    private readonly Assignment st;
    private readonly PackingInstance x;
    private readonly PackingOptions o;
    private readonly List<int> order;
    private readonly ShapeColumns cols;
    private readonly int[] useful;
    // The bin being filled: what it takes of each shape, its groups, its residual capacity and the share it absorbs.
    private readonly int[] tmp;
    private readonly List<int> touched = [];
    private readonly long[] res = new long[D];
    private readonly double[] inv = new double[D];
    private double worth;
    // Per type: a proven upper bound on the score (worth per dollar) of any fill of one of its bins, so a choice can
    // skip the dry run of a type that cannot beat the one chosen so far (the choice is the same, for less work).
    private readonly double[] scoreBound;
    // Per type: the corner of its capacity that every one-bin fill's demand lies below (cpu and memory; the rest its capacity).
    private readonly double[] corner;
    private int choices;
    // The chosen type's dry-run fill, kept so the real fill that follows the choice need not run again.
    private readonly List<(int Shape, int Count)> chosenFill = [];
    private int chosenFillType = -1;

    private ColumnGreedy(Assignment st, List<int> order, PackingOptions o, ShapeColumns cols)
    {
        this.st = st;
        x = st.X;
        this.o = o;
        this.order = order;
        this.cols = cols;
        useful = UsefulTypes();
        tmp = new int[x.S];
        corner = new double[x.T * D];
        scoreBound = ScoreBounds();
    }

    /// <summary>
    /// Per type, a bound on worth/price over every fill of one bin with shapes of the order. A fill's worth is linear in
    /// its demand (shares of the total demand, or dual values, each at most the type's own dual price of the demand
    /// times the largest ratio of value to that price among the shapes it takes), its cpu and memory lie in the box of
    /// the capacity and between the shapes' least and largest memory per cpu: the bound is that LP's optimum, a corner.
    /// </summary>
    private double[] ScoreBounds()
    {
        int T = x.T;
        var total = new double[D];
        for (int q = 0; q < x.S; q++) for (int r = 0; r < D; r++) total[r] += (double)x.SDem[q * D + r] * x.SItems[q].Length;
        var bounds = new double[T];
        var coef = new double[D];
        foreach (int t in useful)
        {
            double rhoMin = double.PositiveInfinity, rhoMax = 0, ratio = 0;
            bool any = false;
            foreach (int s in order)
            {
                if (!x.TypeOk[s * T + t]) continue;
                any = true;
                long c = x.SDem[s * D], m = x.SDem[s * D + 1];
                double rho = c > 0 ? (double)m / c : m > 0 ? double.PositiveInfinity : 0;
                rhoMin = Math.Min(rhoMin, rho); rhoMax = Math.Max(rhoMax, rho);
                if (o.ChoiceByDual)
                {
                    double price = 0;
                    for (int r = 0; r < D; r++) price += x.SDem[s * D + r] * Math.Max(0, st.Dual.W[t * D + r]);
                    double v = st.Dual.Value[s];
                    ratio = Math.Max(ratio, v <= 0 ? 0 : price > 0 ? v / price : double.PositiveInfinity);
                }
            }
            if (!any) { bounds[t] = double.PositiveInfinity; continue; }
            for (int r = 0; r < D; r++)
                coef[r] = o.ChoiceByDual ? Math.Max(0, st.Dual.W[t * D + r]) : r < 3 && total[r] > 0 ? (r == 2 ? 1e3 : 1) / total[r] : 0;
            double cc = x.Cap[t * D], cm = x.Cap[t * D + 1];
            // Both coefficients are non-negative, so the optimum is the corner the other corners are dominated by.
            double c0, m0;
            if (cm >= rhoMin * cc) { c0 = cc; m0 = Math.Min(cm, rhoMax * cc); }
            else { c0 = cm / rhoMin; m0 = cm; }
            corner[t * D] = c0; corner[t * D + 1] = m0;
            for (int r = 2; r < D; r++) corner[t * D + r] = x.Cap[t * D + r];
            double bound = coef[0] * c0 + coef[1] * m0;
            for (int r = 2; r < D; r++) bound += coef[r] * x.Cap[t * D + r];
            if (o.ChoiceByDual) bound *= ratio;
            bounds[t] = double.IsNaN(bound) ? double.PositiveInfinity : bound * (1 + 1e-9) / Math.Max(x.Price[t], 1e-12);
        }
        return bounds;
    }

    /// <summary>
    /// By the dual rule, a tighter bound where choices are many: a fill's worth is at most λ·(w·its demand) for any
    /// non-negative price vector w and λ the largest ratio of value to w's price among the shapes it may hold; every
    /// type's dual prices serve as w, and the least bound wins. Ratios are taken per constraint row (a superset of the
    /// shapes a type takes, so still a bound). Computed once the choices are many: it costs a pass over the shapes.
    /// </summary>
    private void TightenDualBounds()
    {
        int T = x.T, rows = 0;
        foreach (int s in order) rows = Math.Max(rows, x.SRow[s] + 1);
        var ratio = new double[rows * T];
        var onType = new bool[rows * T];
        var w = st.Dual.W;
        foreach (int s in order)
        {
            int row = x.SRow[s];
            for (int t = 0; t < T; t++) onType[row * T + t] |= x.TypeOk[s * T + t];
            double v = st.Dual.Value[s];
            if (v <= 0) continue;
            for (int u = 0; u < T; u++)
            {
                double price = 0;
                for (int r = 0; r < D; r++) price += x.SDem[s * D + r] * Math.Max(0, w[u * D + r]);
                double q = price > 0 ? v / price : double.PositiveInfinity;
                if (q > ratio[row * T + u]) ratio[row * T + u] = q;
            }
        }
        foreach (int t in useful)
        {
            if (double.IsPositiveInfinity(scoreBound[t])) continue;
            double best = double.PositiveInfinity;
            for (int u = 0; u < T; u++)
            {
                double lambda = 0;
                for (int row = 0; row < rows; row++) if (onType[row * T + t]) lambda = Math.Max(lambda, ratio[row * T + u]);
                double value = 0;
                for (int r = 0; r < D; r++) value += Math.Max(0, w[u * D + r]) * corner[t * D + r];
                double b = lambda * value;
                if (!double.IsNaN(b) && b < best) best = b;
            }
            best = best * (1 + 1e-9) / Math.Max(x.Price[t], 1e-12);
            if (best < scoreBound[t]) scoreBound[t] = best;
        }
    }

    /// <summary>The greedy over <paramref name="order"/> (shapes, largest first), or null when there are too many columns.</summary>
    public static ColumnGreedy? Create(Assignment st, List<int> order, PackingOptions o) =>
        ShapeColumns.Create(st, order) is { } cols ? new ColumnGreedy(st, order, o, cols) : null;

    /// <summary>Types no other type beats: another at most as dear, at least as large everywhere, taking every shape it takes.</summary>
    private int[] UsefulTypes()
    {
        int T = x.T;
        var list = new List<int>();
        foreach (int t in x.TypesByPrice)
        {
            bool dominated = false;
            foreach (int u in list)
            {
                if (x.Price[u] > x.Price[t]) continue;
                bool larger = true;
                for (int r = 0; r < D && larger; r++) larger = x.Cap[u * D + r] >= x.Cap[t * D + r];
                if (!larger) continue;
                bool takes = true;
                foreach (int s in order) if (x.TypeOk[s * T + t] && !x.TypeOk[s * T + u]) { takes = false; break; }
                if (takes) { dominated = true; break; }
            }
            if (!dominated) list.Add(t);
        }
        return list.ToArray();
    }

    public void Run()
    {
        int L = order.Count, T = x.T;
        var dual = st.Dual;
        int head = 0, chosen = -1, sinceChoice = 0, chosenRow = -1;
        bool byRow = x.PlaceableItems <= o.ChoicePortfolioItems;
        double chosenAtValue = 0;
        while (true)
        {
            while (head < L && st.Remaining(order[head]) == 0) head++;
            if (head >= L) break;
            int s = order[head];
            // Also when the head's constraint row changes (up to ChoicePortfolioItems): a type chosen for a pinned pod
            // would otherwise go on taking the unpinned pods after it (up to 48 bins), though a type the pin excludes
            // suits them better (aus-syd-1 pinned 10k: 89 ch and 44 mh 15.9-core nodes, most of them full of unpinned
            // pods). Above, where one construction runs, it made 2 of 11 pinned plans at 100k dearer (linear, convex).
            bool keeps = chosen >= 0 && sinceChoice < 48 && dual.Value[s] >= 0.9 * chosenAtValue
                && x.TypeOk[s * T + chosen] && st.TypeCount[chosen] < x.MaxCount[chosen];
            if (!keeps || (byRow && x.SRow[s] != chosenRow))
            {
                // Where only the row changed, the type in use stays unless another beats it by 1 % on this head.
                chosen = ChooseType(s, keeps ? chosen : -1);
                chosenAtValue = dual.Value[s];
                chosenRow = x.SRow[s];
                sinceChoice = 0;
                if (chosen < 0)
                {
                    st.MarkShapeUnplaced(s, st.MaxCountReason(s)); cols.Avail[cols.PosOf[s]] = 0; cols.Exhaust(cols.PosOf[s]); continue;
                }
            }
            if (chosenFillType == chosen && o.ChoiceBounds) Commit(chosen); else Fill(chosen, commit: true, s);
            chosenFillType = -1;
            sinceChoice++;
        }
    }

    /// <summary>The type whose dry-run fill starting with shape s absorbs the most per dollar; -1 when every type that takes s is at its maximum count.</summary>
    private int ChooseType(int s, int prefer = -1)
    {
        int T = x.T;
        int chosen = -1;
        double chosenScore = double.NegativeInfinity;
        chosenFillType = -1;
        if (++choices == 32 && o.ChoiceByDual && o.ChoiceBounds) TightenDualBounds();
        if (prefer >= 0 && x.TypeOk[s * T + prefer] && st.TypeCount[prefer] < x.MaxCount[prefer])
        {
            chosenScore = Fill(prefer, commit: false, s, keep: true) / Math.Max(x.Price[prefer], 1e-12);
            chosen = chosenFillType = prefer;
            KeepFill();
            Clear(commit: false);
        }
        foreach (int t in useful)
        {
            if (t == prefer || !x.TypeOk[s * T + t] || st.TypeCount[t] >= x.MaxCount[t]) continue;
            // A type that cannot score above 1.01 times the choice so far would not replace it: no dry run.
            if (chosen >= 0 && o.ChoiceBounds && scoreBound[t] <= chosenScore * 1.01) continue;
            double score = Fill(t, commit: false, s, keep: true) / Math.Max(x.Price[t], 1e-12);
            if (score > chosenScore * 1.01 || chosen < 0) { chosenScore = score; chosen = t; chosenFillType = t; KeepFill(); }
            Clear(commit: false);
        }
        if (chosen < 0)
        {
            // Dominated types may still have room under MaxCount.
            foreach (int t in x.TypesByPrice)
                if (x.TypeOk[s * T + t] && st.TypeCount[t] < x.MaxCount[t]) { chosen = t; break; }
        }
        return chosen;
    }

    /// <summary>Fills a fresh bin of type t starting with shape <paramref name="first"/> (a dry run, or for real) and returns the share of the demand it absorbs.</summary>
    private double Fill(int t, bool commit, int first, bool keep = false)
    {
        for (int r = 0; r < D; r++) { res[r] = x.Cap[t * D + r]; inv[r] = res[r] > 0 ? 1.0 / ((double)res[r] * res[r]) : 0; }
        cols.NewBin();
        worth = 0;
        Take(cols.ColShape[cols.PosOf[first]]);
        FillUp(t);
        if (commit)
        {
            var bin = st.OpenBin(t);
            foreach (int s in touched)
            {
                for (int c = 0; c < tmp[s]; c++) st.PlaceItem(bin, st.TakeItem(s));
                if (st.Remaining(s) == 0) cols.Exhaust(cols.PosOf[s]);
            }
        }
        if (keep) return worth;   // the caller keeps or clears the fill (KeepFill)
        Clear(commit);
        return worth;
    }

    private void Clear(bool commit)
    {
        foreach (int s in touched)
        {
            if (!commit) cols.Avail[cols.PosOf[s]] += tmp[s];
            tmp[s] = 0;
        }
        touched.Clear();
    }

    /// <summary>Keeps the dry run just made (with keep, before its <see cref="Clear"/>) as the chosen type's fill.</summary>
    private void KeepFill()
    {
        chosenFill.Clear();
        foreach (int s in touched) chosenFill.Add((s, tmp[s]));
    }

    /// <summary>Opens a bin of type t and places the chosen type's kept dry-run fill in it: the fill a real Fill would make now.</summary>
    private void Commit(int t)
    {
        var bin = st.OpenBin(t);
        foreach (var (s, count) in chosenFill)
        {
            cols.Avail[cols.PosOf[s]] -= count;
            for (int c = 0; c < count; c++) st.PlaceItem(bin, st.TakeItem(s));
            if (st.Remaining(s) == 0) cols.Exhaust(cols.PosOf[s]);
        }
    }

    private void FillUp(int t)
    {
        int sd = cols.Sd, od = 1 - sd;
        while (true)
        {
            int bestPos = -1;
            double bestScore = double.NegativeInfinity;
            double gs = res[sd], go = res[od];
            double cs = x.Cap[t * D + sd], co = x.Cap[t * D + od];
            double ns = gs / cs, no = go / co, norm = Math.Sqrt(ns * ns + no * no);
            if (norm > 0) { ns /= norm; no /= norm; }
            for (int k = 0; k < cols.K; k++)
            {
                if (!cols.ColType[k * x.T + t] || !ColumnFits(k, res)) continue;
                if (!o.BalancedFill || norm == 0)
                {
                    int p = Largest(k, t, res, res[sd]);
                    if (p < 0) continue;
                    int s = cols.ColShape[p];
                    // Dot product of the demand with the residual, both as shares of the capacity; the dual value
                    // (largest first) and the plain normalised size packed worse.
                    double score = 0;
                    for (int r = 0; r < D; r++) score += x.SDem[s * D + r] * (double)res[r] * inv[r];
                    if (score > bestScore) { bestScore = score; bestPos = p; }
                    continue;
                }
                // Balanced: of each column, the two shapes nearest the key that keeps the bin's fill on the line to
                // the target (d_o · g_s / g_o), scored by their length along that line less half their distance from
                // it, as shares of the capacity (the largest-that-fits rule above filled memory first and left the
                // last bins short of it). The line leads to the bin's own full corner: aiming instead at the ratio of
                // the demand its type is cheapest for by the dual left a cheap compute class memory-full with a
                // quarter of its cpu idle and a cheap memory class the other way round (real iad prices).
                double dO = cols.ColDem[k * D + od];
                long ideal = go <= 0 || dO <= 0 ? res[sd] : (long)Math.Min(res[sd], dO * gs / go);
                int upper = cols.Upper(k, ideal);
                int below = cols.LargestBelow(k, t, upper);
                Consider(below, dO, cs, co, ns, no, ref bestScore, ref bestPos);
                if (below < 0 || cols.ColKey[below] != ideal) Consider(cols.SmallestFrom(k, t, res, upper), dO, cs, co, ns, no, ref bestScore, ref bestPos);
            }
            if (bestPos < 0) break;
            Take(cols.ColShape[bestPos]);
        }
    }

    private void Consider(int p, double dO, double cs, double co, double ns, double no, ref double bestScore, ref int bestPos)
    {
        if (p < 0) return;
        double a = cols.ColKey[p] / cs, b = dO / co;
        double along = a * ns + b * no;
        double px = a - along * ns, py = b - along * no;
        double score = along - 0.5 * Math.Sqrt(px * px + py * py);
        if (score > bestScore) { bestScore = score; bestPos = p; }
    }

    /// <summary>Column k's demand fits <paramref name="room"/> outside the sorted dimension (the searches check the groups).</summary>
    private bool ColumnFits(int k, long[] room)
    {
        for (int r = 0; r < D; r++) if (cols.ColDem[k * D + r] > room[r]) return false;
        return true;
    }

    /// <summary>The largest shape of column k still available (beyond what this bin holds) that fits <paramref name="room"/> on type t, or -1.</summary>
    private int Largest(int k, int t, long[] room, long limit) => ColumnFits(k, room) ? cols.LargestBelow(k, t, cols.Upper(k, limit)) : -1;

    private void Take(int sb)
    {
        for (int r = 0; r < D; r++) res[r] -= x.SDem[sb * D + r];
        if (x.SAa[sb] >= 0) cols.Hold(x.SAa[sb]);
        // Shares of the total demand by default: the dual is often degenerate (on the real iad prices it priced the cheap
        // compute class by memory alone and the cheap memory class by cpu alone), and a fill that left a bin's cpu idle
        // then scored as well as a full one. The dual value where the portfolio asks for it (PackingOptions.ChoiceByDual).
        worth += o.ChoiceByDual ? st.Dual.Value[sb] : st.SizeOf(sb);
        cols.Avail[cols.PosOf[sb]]--;
        if (tmp[sb]++ == 0) touched.Add(sb);
    }
}
