namespace Karpetrack;

/// <summary>
/// Ruin and repair on the new bins, after Levine and Ducatelle's local search for bin packing (2004): the
/// least efficient bins are emptied into a pool; every other bin then trades items with the pool where that
/// makes it fuller (one pool item in for nothing, one or two of its own); the pool, now of smaller items, goes
/// into spare room first fit and what is left into fresh bins. A round is kept only when it lowers the cost,
/// so the phase never makes a packing worse. Work is bounded by a count of fit tests, not by time.
/// </summary>
internal sealed class RuinAndRepair(Assignment st, PackingOptions o)
{
    private const int D = PackingInstance.D;
    private readonly PackingInstance x = st.X;
    private long work = o.ImproveWork;
    private readonly List<Bin> tried = [];
    private readonly List<int> pool = [];
    private readonly List<Bin> opened = [];
    private readonly List<Bin> victims = [];
    private readonly List<(int Item, Bin? From, Bin? To)> journal = [];
    private int[] heldShape = new int[16];
    private double[] heldVol = new double[16];
    private double[] eff = [], full = [];
    private int[] order = [];

    public void Run()
    {
        var live = WorkingSet();
        // Rounds since the cost last fell: where many in a row gain nothing, the rest rarely do either.
        int idle = 0;
        while (work > 0 && idle++ < o.ImproveIdleRounds)
        {
            live.RemoveAll(b => b.Removed || b.Items.Count == 0);
            if (live.Count < 2) return;
            int n = live.Count;
            if (eff.Length < n) { eff = new double[2 * n]; full = new double[2 * n]; order = new int[2 * n]; }
            PickVictims(live);
            if (victims.Count == 0) return;
            // Only the victims, the partners and the bins a round opens change: cost and spread are summed over those.
            SortByKey(full, order, n, o.ImprovePartners);
            var partners = new List<Bin>(o.ImprovePartners);
            for (int j = 0; j < n && partners.Count < o.ImprovePartners; j++) if (!victims.Contains(live[order[j]])) partners.Add(live[order[j]]);
            double before = 0, spreadBefore = 0;
            foreach (var b in victims.Concat(partners)) { before += x.Price[b.Type]; spreadBefore += st.Fullness(b) * st.Fullness(b); }

            journal.Clear();
            pool.Clear();
            opened.Clear();
            foreach (var v in victims)
            {
                foreach (int i in v.Items.ToList()) { Move(i, v, null); pool.Add(i); }
                v.Removed = true;
                st.TypeCount[v.Type]--;
            }
            foreach (var b in partners)
            {
                if (work <= 0 || pool.Count == 0) break;
                Trade(b);
            }
            var still = IntoSpareRoom(partners);
            bool stuck = !IntoFreshBins(still);
            DownsizeOpened();
            double after = 0, spreadAfter = 0;
            foreach (var b in partners.Concat(opened)) if (b.Items.Count > 0) { after += x.Price[b.Type]; spreadAfter += st.Fullness(b) * st.Fullness(b); }
            // Equal cost with fuller bins (a larger sum of squared fullness) is progress too: the room gathers in
            // fewer bins, which later rounds empty.
            if (!stuck && (after < before - 1e-9 || (after < before + 1e-9 && spreadAfter > spreadBefore * (1 + 1e-9))))
            {
                bool gained = after < before - 1e-9;
                foreach (var b in partners) if (b.Items.Count == 0) { b.Removed = true; st.TypeCount[b.Type]--; }
                if (gained) { foreach (var b in tried) b.Tried = false; tried.Clear(); idle = 0; }
                live.AddRange(opened);
                continue;
            }
            Undo();
        }
    }

    private static void SortByKey(double[] keys, int[] idx, int n, int k) => Assignment.SortByKey(keys, idx, n, k);

    /// <summary>
    /// The bins the phase works on, where the room is: the least efficient by the dual and the least full (shares of
    /// cpu, memory and GPU summed); the rest stay as they are, so that a round costs the same at any size. On the real
    /// iad prices the two $0.001 classes are the most efficient by the dual yet hold most of the idle room (the compute
    /// class memory-full with a quarter of its cpu idle): the least efficient alone gained nothing there, and the least
    /// full alone lost on the test's iad mix.
    /// </summary>
    private List<Bin> WorkingSet()
    {
        var all = new List<Bin>();
        foreach (var b in st.Bins) { b.Tried = false; if (!b.Removed && b.Items.Count > 0) all.Add(b); }
        eff = new double[all.Count];
        full = new double[all.Count];
        order = new int[all.Count];
        for (int j = 0; j < all.Count; j++) full[j] = st.Fullness(all[j]);
        SortByKey(full, order, all.Count, o.ImproveBins);
        var live = st.LeastEfficient(o.ImproveBins / 2);
        foreach (var b in live) b.Tried = true;
        for (int j = 0; j < all.Count && live.Count < o.ImproveBins; j++) if (!all[order[j]].Tried) live.Add(all[order[j]]);
        foreach (var b in live) b.Tried = false;
        return live;
    }

    /// <summary>The least efficient live bins not yet tried; fills <see cref="full"/> for the partners' choice, victims last.</summary>
    private void PickVictims(List<Bin> live)
    {
        int n = live.Count;
        victims.Clear();
        for (int j = 0; j < n; j++) { eff[j] = st.Efficiency(live[j]); full[j] = st.Fullness(live[j]); }
        while (victims.Count < o.ImproveVictims)
        {
            int pick = -1;
            for (int j = 0; j < n; j++)
                if (!live[j].Tried && (pick < 0 || eff[j] < eff[pick])) pick = j;
            if (pick < 0) break;
            live[pick].Tried = true;
            tried.Add(live[pick]);
            victims.Add(live[pick]);
            full[pick] = double.PositiveInfinity;
        }
    }

    /// <summary>
    /// Trades of one partner with the pool, up to four: the pool item, in for nothing or for one or two of the bin's
    /// own, that fills the bin most. Volumes on the partner's type are worked out once per step (not once per pool item
    /// and pair), NaN where the type does not take the pool item.
    /// </summary>
    private void Trade(Bin b)
    {
        for (int step = 0; step < 4; step++)
        {
            int t = b.Type;
            double bestGain = 1e-9;
            int bestIn = -1, out1 = -1, out2 = -1;
            var held = b.Items;
            int h = held.Count;
            // Two out for one in only where a bin holds few items: the pairs grow with the square.
            bool pairs = h <= 12;
            work += -pool.Count * (1 + h + (pairs ? h * (h - 1) / 2 : 0));
            if (heldShape.Length < h) { heldShape = new int[Math.Max(h, 2 * heldShape.Length)]; heldVol = new double[heldShape.Length]; }
            double minOut = double.PositiveInfinity;
            for (int a = 0; a < h; a++) { heldShape[a] = x.ShapeOf[held[a]]; heldVol[a] = st.Volume(heldShape[a], t); minOut = Math.Min(minOut, heldVol[a]); }
            foreach (int f in pool)
            {
                int sf = x.ShapeOf[f];
                if (!x.TypeOk[sf * x.T + t]) continue;
                double vf = st.Volume(sf, t);
                if (vf <= bestGain) continue;
                if (AaAfter(b, sf, -1, -1) && FitsAfter(b, sf, -1, -1)) { bestGain = vf; bestIn = f; out1 = out2 = -1; continue; }
                // Every swap gives up at least the smallest item held.
                if (vf - minOut <= bestGain) continue;
                for (int a = 0; a < h; a++)
                {
                    int sa = heldShape[a];
                    double va = vf - heldVol[a];
                    if (va <= bestGain) continue;
                    if (AaAfter(b, sf, sa, -1) && FitsAfter(b, sf, sa, -1)) { bestGain = va; bestIn = f; out1 = held[a]; out2 = -1; }
                    for (int c = a + 1; pairs && c < h; c++)
                    {
                        double vc = va - heldVol[c];
                        if (vc > bestGain && AaAfter(b, sf, sa, heldShape[c]) && FitsAfter(b, sf, sa, heldShape[c])) { bestGain = vc; bestIn = f; out1 = held[a]; out2 = held[c]; }
                    }
                }
            }
            if (bestIn < 0) break;
            pool.Remove(bestIn);
            if (out1 >= 0) { Move(out1, b, null); pool.Add(out1); }
            if (out2 >= 0) { Move(out2, b, null); pool.Add(out2); }
            Move(bestIn, null, b);
        }
    }

    /// <summary>What is left of the pool goes into the partners' spare room, largest first, where it fits tightest; returns what found none.</summary>
    private List<int> IntoSpareRoom(List<Bin> partners)
    {
        pool.Sort((a, b) => { int c = st.SizeOf(x.ShapeOf[b]).CompareTo(st.SizeOf(x.ShapeOf[a])); return c != 0 ? c : a.CompareTo(b); });
        var still = new List<int>();
        foreach (int i in pool)
        {
            int s = x.ShapeOf[i];
            Bin? best = null;
            double bestWaste = double.PositiveInfinity;
            work -= partners.Count;
            foreach (var b in partners)
            {
                if (!st.Allows(b, s) || !st.AaOk(b, s) || !st.Fits(b, s)) continue;
                double w = st.WasteAfter(b, s, 1);
                if (w < bestWaste) { bestWaste = w; best = b; }
            }
            if (best is null) still.Add(i); else Move(i, null, best);
        }
        return still;
    }

    /// <summary>
    /// The rest into fresh bins: the type whose first-fit fill of the rest absorbs the most dual value per dollar.
    /// False when some item fits no type with room under its maximum count.
    /// </summary>
    private bool IntoFreshBins(List<int> still)
    {
        var bestTake = new List<int>();
        var take = new List<int>();
        var used = new long[D];
        var groups = new List<int>();
        while (still.Count > 0)
        {
            int bestType = -1;
            double bestScore = double.NegativeInfinity;
            bestTake.Clear();
            foreach (int t in x.TypesByPrice)
            {
                if (st.TypeCount[t] >= x.MaxCount[t]) continue;
                Array.Clear(used); take.Clear(); groups.Clear();
                double worth = 0;
                foreach (int i in still)
                {
                    int s = x.ShapeOf[i];
                    if (!x.TypeOk[s * x.T + t] || !x.FitsOnType(s, used, t)) continue;
                    if (x.SAa[s] >= 0) { if (groups.Contains(x.SAa[s])) continue; groups.Add(x.SAa[s]); }
                    x.Add(used, s, 1);
                    take.Add(i);
                    worth += st.Dual.Value[s];
                }
                work -= still.Count;
                if (take.Count == 0) continue;
                double score = worth / Math.Max(x.Price[t], 1e-12);
                if (score > bestScore * 1.01 || bestType < 0) { bestScore = score; bestType = t; bestTake.Clear(); bestTake.AddRange(take); }
            }
            if (bestType < 0) return false;
            var nb = st.OpenBin(bestType);
            opened.Add(nb);
            foreach (int i in bestTake) Move(i, null, nb);
            var set = new HashSet<int>(bestTake);
            still.RemoveAll(set.Contains);
        }
        return true;
    }

    /// <summary>Each bin the round opened becomes the cheapest type that holds it.</summary>
    private void DownsizeOpened()
    {
        foreach (var nb in opened)
            foreach (int t in x.TypesByPrice)
            {
                if (x.Price[t] >= x.Price[nb.Type]) break;
                if (st.TypeCount[t] >= x.MaxCount[t] || !x.FitsAmount(nb.Used, t) || !st.AllAllowed(nb, t)) continue;
                st.TypeCount[nb.Type]--; st.TypeCount[t]++; nb.Type = t;
                break;
            }
    }

    /// <summary>Moves in reverse, then the bins this round opened and removed.</summary>
    private void Undo()
    {
        for (int m = journal.Count - 1; m >= 0; m--)
        {
            var (i, from, to) = journal[m];
            if (to is not null) st.RemoveItem(to, i);
            if (from is not null) st.PlaceItem(from, i);
        }
        journal.Clear();
        foreach (var nb in opened) { nb.Removed = true; st.TypeCount[nb.Type]--; }
        foreach (var v in victims) { v.Removed = false; st.TypeCount[v.Type]++; }
    }

    private void Move(int i, Bin? from, Bin? to)
    {
        if (from is not null) st.RemoveItem(from, i);
        if (to is not null) st.PlaceItem(to, i);
        journal.Add((i, from, to));
    }

    private bool FitsAfter(Bin b, int sIn, int sOut1, int sOut2)
    {
        for (int r = 0; r < D; r++)
        {
            long u = b.Used[r] + x.SDem[sIn * D + r];
            if (sOut1 >= 0) u -= x.SDem[sOut1 * D + r];
            if (sOut2 >= 0) u -= x.SDem[sOut2 * D + r];
            if (u > x.Cap[b.Type * D + r]) return false;
        }
        return true;
    }

    private bool AaAfter(Bin b, int sIn, int sOut1, int sOut2)
    {
        int g = x.SAa[sIn];
        if (g < 0 || b.Groups is null || !b.Groups.Contains(g)) return true;
        return (sOut1 >= 0 && x.SAa[sOut1] == g) || (sOut2 >= 0 && x.SAa[sOut2] == g);
    }
}
