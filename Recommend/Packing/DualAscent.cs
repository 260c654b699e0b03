namespace Karpetrack;

/// <summary>
/// Coordinate ascent on the (concave, piecewise linear) dual of <see cref="DualBound"/>: for one type at a time, shift
/// weight between two dimensions to the exact maximum along that line. Stops when a round gains less than 1e-6.
/// Works on groups of shapes (see DualBound.Compress), each with a demand, a count and the types it may use.
/// </summary>
internal sealed class DualAscent
{
    private const int D = PackingInstance.D;
    private readonly PackingInstance x;
    private readonly long[] capEff;
    private readonly long[] gDem;
    private readonly double[] gCount;
    private readonly int[][] gTypes;
    private readonly int T, G;
    private readonly double[] a;                 // T×D: each type's price split over the dimensions (sums to 1)
    private readonly double[] w;                 // T×D: price per unit, price·a / capacity
    private readonly double[] saved;             // a before a trial shift
    private readonly List<int>[] active;         // per type: the dimensions it can price
    private readonly double[] val;               // G×T: a group's cost on a type
    private readonly List<int>[] typeGroups;     // per type: the groups that may use it
    private readonly double[] other;             // per group of the type worked on: its cheapest cost elsewhere
    private readonly (double At, double Drop)[] events;
    private double current;

    public DualAscent(PackingInstance x, long[] capEff, int groups, long[] gDem, double[] gCount, int[][] gTypes)
    {
        this.x = x; this.capEff = capEff; this.gDem = gDem; this.gCount = gCount; this.gTypes = gTypes;
        T = x.T; G = groups;
        a = new double[T * D];
        w = new double[T * D];
        saved = new double[T * D];
        active = new List<int>[T];
        ProportionalStart();
        val = new double[G * T];
        typeGroups = new List<int>[T];
        for (int t = 0; t < T; t++) typeGroups[t] = [];
        for (int g = 0; g < G; g++) foreach (int t in gTypes[g]) typeGroups[t].Add(g);
        other = new double[G];
        events = new (double At, double Drop)[G];
    }

    /// <summary>The price vectors w (T×D), with capacity·w ≤ price for every type.</summary>
    public double[] Run()
    {
        if (G == 0) return w;
        for (int t = 0; t < T; t++) Eval(t);
        current = Total();
        StartFromSingleResources();
        for (int round = 0; round < 12; round++)
        {
            double before = current;
            if (round < 2) GlobalMoves();
            for (int t = 0; t < T; t++) TypeMoves(t);
            if (current - before <= 1e-6 * Math.Max(current, 1e-12)) break;
        }
        // Renormalise so that capacity·w ≤ price holds exactly despite rounding in the steps.
        for (int t = 0; t < T; t++)
        {
            double sum = 0;
            foreach (int r in active[t]) sum += capEff[t * D + r] * w[t * D + r];
            if (sum > x.Price[t] && sum > 0) foreach (int r in active[t]) w[t * D + r] *= x.Price[t] / sum;
        }
        return w;
    }

    /// <summary>Each type's price split over the dimensions in proportion to the demand it could serve.</summary>
    private void ProportionalStart()
    {
        var total = new double[T * D];
        for (int g = 0; g < G; g++)
            foreach (int t in gTypes[g])
                for (int r = 0; r < D; r++) total[t * D + r] += gCount[g] * gDem[g * D + r];
        for (int t = 0; t < T; t++)
        {
            active[t] = [];
            double sum = 0;
            for (int r = 0; r < D; r++)
                if (capEff[t * D + r] > 0 && total[t * D + r] > 0) { active[t].Add(r); a[t * D + r] = total[t * D + r] / capEff[t * D + r]; sum += a[t * D + r]; }
            foreach (int r in active[t]) a[t * D + r] /= sum;
            foreach (int r in active[t]) w[t * D + r] = x.Price[t] * a[t * D + r] / capEff[t * D + r];
        }
    }

    private void Eval(int t)
    {
        foreach (int g in typeGroups[t])
        {
            double v = 0;
            for (int r = 0; r < D; r++) v += gDem[g * D + r] * w[t * D + r];
            val[g * T + t] = v;
        }
    }

    private double Total()
    {
        double sum = 0;
        for (int g = 0; g < G; g++)
        {
            double m = double.PositiveInfinity;
            foreach (int t in gTypes[g]) m = Math.Min(m, val[g * T + t]);
            sum += gCount[g] * m;
        }
        return sum;
    }

    /// <summary>
    /// Shifts weight between two dimensions in every type at once: types of equal price and similar shape tie for
    /// most items, and a move on one of them alone changes no item's cheapest type.
    /// </summary>
    private double Shifted(int r1, int r2, double delta)
    {
        for (int t = 0; t < T; t++)
        {
            if (!active[t].Contains(r1) || !active[t].Contains(r2)) continue;
            double d = Math.Clamp(delta, -saved[t * D + r1], saved[t * D + r2]);
            a[t * D + r1] = saved[t * D + r1] + d; a[t * D + r2] = saved[t * D + r2] - d;
            w[t * D + r1] = x.Price[t] * a[t * D + r1] / capEff[t * D + r1];
            w[t * D + r2] = x.Price[t] * a[t * D + r2] / capEff[t * D + r2];
            Eval(t);
        }
        return Total();
    }

    /// <summary>A golden-section search per pair of dimensions over the shift applied to all types together.</summary>
    private void GlobalMoves()
    {
        for (int r1 = 0; r1 < D; r1++)
            for (int r2 = r1 + 1; r2 < D; r2++)
            {
                // A pair of dimensions no type prices both of (GPU in a mix without GPUs) cannot move anything.
                bool any = false;
                for (int t = 0; t < T && !any; t++) any = active[t].Contains(r1) && active[t].Contains(r2);
                if (!any) continue;
                Array.Copy(a, saved, a.Length);
                double lo = -1, hi = 1;
                const double phi = 0.6180339887498949;
                double m1 = hi - phi * (hi - lo), m2 = lo + phi * (hi - lo);
                double f1 = Shifted(r1, r2, m1), f2 = Shifted(r1, r2, m2);
                for (int it = 0; it < 24; it++)
                {
                    if (f1 < f2) { lo = m1; m1 = m2; f1 = f2; m2 = lo + phi * (hi - lo); f2 = Shifted(r1, r2, m2); }
                    else { hi = m2; m2 = m1; f2 = f1; m1 = hi - phi * (hi - lo); f1 = Shifted(r1, r2, m1); }
                }
                double bestDelta = f1 >= f2 ? m1 : m2, bestF = Math.Max(f1, f2);
                if (bestF > current * (1 + 1e-12)) { current = Shifted(r1, r2, bestDelta); }
                else Shifted(r1, r2, 0);
            }
    }

    /// <summary>Also starts from "price everything by one resource" for each resource: the classic volume bounds.</summary>
    private void StartFromSingleResources()
    {
        var start = (double[])a.Clone();
        double startValue = current;
        for (int r = 0; r < D; r++)
        {
            for (int t = 0; t < T; t++)
            {
                if (active[t].Count == 0) continue;
                bool has = active[t].Contains(r);
                foreach (int q in active[t]) { a[t * D + q] = has ? (q == r ? 1 : 0) : start[t * D + q]; w[t * D + q] = x.Price[t] * a[t * D + q] / capEff[t * D + q]; }
                Eval(t);
            }
            double v = Total();
            if (v > startValue) { startValue = v; Array.Copy(a, saved, a.Length); }
        }
        if (startValue > current) Array.Copy(saved, a, a.Length); else Array.Copy(start, a, a.Length);
        for (int t = 0; t < T; t++) { foreach (int q in active[t]) w[t * D + q] = x.Price[t] * a[t * D + q] / capEff[t * D + q]; Eval(t); }
        current = Total();
    }

    /// <summary>For one type, every pair of its dimensions moved to the exact maximum along their line.</summary>
    private void TypeMoves(int t)
    {
        var act = active[t];
        if (act.Count < 2) return;
        var tg = typeGroups[t];
        for (int k = 0; k < tg.Count; k++)
        {
            int g = tg[k];
            double m = double.PositiveInfinity;
            foreach (int u in gTypes[g]) if (u != t) m = Math.Min(m, val[g * T + u]);
            other[k] = m;
        }
        for (int i = 0; i < act.Count; i++)
            for (int j = i + 1; j < act.Count; j++) PairMove(t, act[i], act[j]);
    }

    private void PairMove(int t, int r1, int r2)
    {
        var tg = typeGroups[t];
        double c1 = x.Price[t] / capEff[t * D + r1], c2 = x.Price[t] / capEff[t * D + r2];
        double best = BestShift(t, r1, r2, c1, c2);
        if (Math.Abs(best) < 1e-15) return;
        // Apply tentatively and keep only a real gain.
        double gain = 0;
        for (int k = 0; k < tg.Count; k++)
        {
            int g = tg[k];
            double v = val[g * T + t], o = other[k];
            double nv = v + best * (gDem[g * D + r1] * c1 - gDem[g * D + r2] * c2);
            gain += gCount[g] * (Math.Min(o, nv) - Math.Min(o, v));
        }
        if (gain <= 1e-12 * Math.Max(1, current)) return;
        a[t * D + r1] += best; a[t * D + r2] -= best;
        if (a[t * D + r1] < 0) a[t * D + r1] = 0;
        if (a[t * D + r2] < 0) a[t * D + r2] = 0;
        w[t * D + r1] = x.Price[t] * a[t * D + r1] / capEff[t * D + r1];
        w[t * D + r2] = x.Price[t] * a[t * D + r2] / capEff[t * D + r2];
        Eval(t);
        current += gain;
    }

    /// <summary>
    /// The shift δ of weight from r2 to r1 on type t that maximises the dual: each group's cost on t changes by δ·slope
    /// until it meets its best elsewhere, so the dual is piecewise linear in δ and its maximum is where the slope turns.
    /// </summary>
    private double BestShift(int t, int r1, int r2, double c1, double c2)
    {
        var tg = typeGroups[t];
        double lo = -a[t * D + r1], hi = a[t * D + r2];
        double slope0 = 0;
        int ne = 0;
        for (int k = 0; k < tg.Count; k++)
        {
            int g = tg[k];
            double sl = gCount[g] * (gDem[g * D + r1] * c1 - gDem[g * D + r2] * c2);
            if (sl == 0) continue;
            double v = val[g * T + t], o = other[k];
            if (double.IsPositiveInfinity(o)) { slope0 += sl; continue; }
            double per = sl / gCount[g];
            double at = (o - v) / per;          // where this group's cost on t meets its best elsewhere
            if (sl > 0) { slope0 += sl; events[ne++] = (at, sl); }   // counts until at
            else events[ne++] = (at, -sl);                              // counts after at
        }
        // A cached static Comparison: Array.Sort with an IComparer wraps it in a new delegate on every call (30 MB a
        // recommender run at 5,000 nodes); this is the same introsort with the same comparisons, allocation-free.
        events.AsSpan(0, ne).Sort(static (x, y) => x.At.CompareTo(y.At));
        double best = hi;
        double cur = slope0;
        // Negative-slope events contribute nothing before `at`; positive ones everything before `at`.
        // Both lower the running slope by Drop when passed, so the maximum is where it turns ≤ 0.
        int ei = 0;
        while (ei < ne && events[ei].At <= lo) { cur -= events[ei].Drop; ei++; }
        if (cur <= 0) best = lo;
        else
        {
            for (; ei < ne; ei++)
            {
                if (events[ei].At >= hi) break;
                cur -= events[ei].Drop;
                if (cur <= 0) { best = events[ei].At; break; }
            }
        }
        return best;
    }
}
