namespace Karpetrack;

/// <summary>
/// The first improvement phase: downsizing bins to the cheapest type that holds them, emptying the least efficient
/// bins into the others' spare room, and merging two bins into one cheaper type. Each move keeps the packing valid
/// and never raises its cost.
/// </summary>
internal static class LocalSearch
{
    private const int D = PackingInstance.D;

    /// <summary>Repeats the improving moves until none applies (at most a few rounds).</summary>
    public static void Run(Assignment st, PackingOptions o)
    {
        for (int round = 0; round < 4; round++)
        {
            bool changed = Downsize(st);
            changed |= Eliminate(st, o.LocalSearchBins);
            changed |= Merge(st, Math.Max(2, o.LocalSearchBins / 4));
            changed |= Downsize(st);
            if (!changed) break;
        }
        st.Bins.RemoveAll(b => b.Removed || b.Items.Count == 0);
    }

    /// <summary>The cheap part of the local search: each bin becomes the cheapest type that holds it.</summary>
    public static void DownsizeOnly(Assignment st)
    {
        Downsize(st);
        st.Bins.RemoveAll(b => b.Removed || b.Items.Count == 0);
    }

    /// <summary>Each bin becomes the cheapest type that still holds what it holds.</summary>
    private static bool Downsize(Assignment st)
    {
        var x = st.X;
        bool changed = false;
        foreach (var b in st.Bins)
        {
            if (b.Removed) continue;
            if (b.Items.Count == 0) { b.Removed = true; st.TypeCount[b.Type]--; changed = true; continue; }
            foreach (int t in x.TypesByPrice)
            {
                if (x.Price[t] >= x.Price[b.Type]) break;
                if (st.TypeCount[t] >= x.MaxCount[t] || !x.FitsAmount(b.Used, t) || !st.AllAllowed(b, t)) continue;
                st.TypeCount[b.Type]--; st.TypeCount[t]++; b.Type = t; changed = true;
                break;
            }
        }
        return changed;
    }

    /// <summary>Empties the least efficient bins into the others' spare room where every item finds a place.</summary>
    private static bool Eliminate(Assignment st, int k)
    {
        var x = st.X;
        bool changed = false;
        var moves = new List<(int Item, Bin To)>();
        // Destinations: the least efficient bins (they have the most room), not all bins, so the work is bounded.
        var targets = st.LeastEfficient(4 * k);
        foreach (var victim in targets.Take(k).ToList())
        {
            if (victim.Removed) continue;
            var items = victim.Items.ToList();
            items.Sort((a, b) => { int c = st.Dual.Value[x.ShapeOf[b]].CompareTo(st.Dual.Value[x.ShapeOf[a]]); return c != 0 ? c : a.CompareTo(b); });
            moves.Clear();
            bool ok = true;
            foreach (int i in items)
            {
                int s = x.ShapeOf[i];
                Bin? best = null;
                double bestWaste = double.PositiveInfinity;
                foreach (var b in st.Existing)
                    if (st.Allows(b, s) && st.AaOk(b, s) && st.Fits(b, s)) { double w = st.WasteAfter(b, s, 1); if (w < bestWaste) { bestWaste = w; best = b; } }
                foreach (var b in targets)
                {
                    if (b.Removed || ReferenceEquals(b, victim) || !st.Allows(b, s) || !st.Fits(b, s) || !st.AaOk(b, s)) continue;
                    double w = st.WasteAfter(b, s, 1);
                    if (w < bestWaste) { bestWaste = w; best = b; }
                }
                if (best is null) { ok = false; break; }
                st.RemoveItem(victim, i);
                st.PlaceItem(best, i);
                moves.Add((i, best));
            }
            if (ok)
            {
                victim.Removed = true;
                st.TypeCount[victim.Type]--;
                changed = true;
            }
            else
            {
                for (int m = moves.Count - 1; m >= 0; m--) { st.RemoveItem(moves[m].To, moves[m].Item); st.PlaceItem(victim, moves[m].Item); }
            }
        }
        return changed;
    }

    /// <summary>Two bins become one of a type cheaper than both together.</summary>
    private static bool Merge(Assignment st, int k)
    {
        var x = st.X;
        bool changed = false;
        var cand = st.LeastEfficient(k);
        var used = new long[D];
        for (int i = 0; i < cand.Count; i++)
        {
            var a = cand[i];
            if (a.Removed) continue;
            for (int j = i + 1; j < cand.Count; j++)
            {
                var b = cand[j];
                if (b.Removed) continue;
                if (a.Groups is not null && b.Groups is not null && a.Groups.Intersect(b.Groups).Any()) continue;
                for (int r = 0; r < D; r++) used[r] = a.Used[r] + b.Used[r];
                double limit = x.Price[a.Type] + x.Price[b.Type];
                foreach (int t in x.TypesByPrice)
                {
                    if (x.Price[t] >= limit - 1e-9) break;
                    int count = st.TypeCount[t] - (a.Type == t ? 1 : 0) - (b.Type == t ? 1 : 0);
                    if (count >= x.MaxCount[t] || !x.FitsAmount(used, t) || !st.AllAllowed(a, t) || !st.AllAllowed(b, t)) continue;
                    foreach (int item in b.Items.ToList()) { st.RemoveItem(b, item); st.PlaceItem(a, item); }
                    b.Removed = true;
                    st.TypeCount[b.Type]--;
                    st.TypeCount[a.Type]--;
                    st.TypeCount[t]++;
                    a.Type = t;
                    changed = true;
                    break;
                }
            }
        }
        return changed;
    }
}
