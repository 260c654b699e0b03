namespace Karpetrack;

/// <summary>
/// karpetrack's three strategies (spot-api.md §5.3), the yardstick the packer must never lose to: FFD, best-fit and
/// a single large node, each made honest about constraints, GPUs, MaxCount and unplaceable pods.
/// </summary>
internal static class Baselines
{
    public static PackingSolution FirstFitDecreasing(PackingInstance x, DualBound d) => Karpetrack(x, d, "karpetrack FFD", utilisation: false);
    public static PackingSolution BestFit(PackingInstance x, DualBound d) => Karpetrack(x, d, "karpetrack best-fit", utilisation: true);

    /// <summary>
    /// karpetrack's loop (spot-api.md §5.3): pods by CPU then memory, descending; for every type fill a fresh node
    /// first-fit from the remaining pods, open the best-scoring one. Honest where karpetrack was not: constraints,
    /// GPUs and MaxCount are respected, existing free capacity is used first-fit, unplaceable pods are reported.
    /// </summary>
    private static PackingSolution Karpetrack(PackingInstance x, DualBound d, string name, bool utilisation)
    {
        var st = new Assignment(x, d);
        FillExistingFirstFit(st);
        var remaining = RemainingItemsByCpuThenMemory(st);
        var typeOrder = x.TypesByEfficiency();
        var used = new long[PackingInstance.D];
        var chosen = new List<int>();
        var bestChosen = new List<int>();
        var aa = new List<int>();
        while (remaining.Count > 0)
        {
            int bestType = -1;
            double bestScore = double.NegativeInfinity;
            foreach (int t in typeOrder)
            {
                if (st.TypeCount[t] >= x.MaxCount[t]) continue;
                Array.Clear(used);
                chosen.Clear();
                aa.Clear();
                foreach (int i in remaining)
                {
                    int s = x.ShapeOf[i];
                    if (!x.TypeOk[s * x.T + t]) continue;
                    if (!x.FitsOnType(s, used, t)) continue;
                    int g = x.SAa[s];
                    if (g >= 0 && aa.Contains(g)) continue;
                    if (g >= 0) aa.Add(g);
                    x.Add(used, s, 1);
                    chosen.Add(i);
                }
                if (chosen.Count == 0) continue;
                double score;
                if (utilisation)
                {
                    double u = (double)used[0] / x.Cap[t * 4] + (double)used[1] / x.Cap[t * 4 + 1];
                    int dims = 2;
                    if (x.Cap[t * 4 + 2] > 0) { u += (double)used[2] / x.Cap[t * 4 + 2]; dims++; }
                    score = u / dims;
                }
                else score = chosen.Count / Math.Max(x.Price[t], 1e-12);
                if (score > bestScore) { bestScore = score; bestType = t; bestChosen.Clear(); bestChosen.AddRange(chosen); }
            }
            if (bestType < 0) break;
            var bin = st.OpenBin(bestType);
            foreach (int i in bestChosen) st.PlaceItem(bin, i);
            var taken = new HashSet<int>(bestChosen);
            remaining.RemoveAll(taken.Contains);
        }
        foreach (int i in remaining) st.MarkUnplaced(i);
        return st.ToSolution(name);
    }

    /// <summary>karpetrack's third strategy, made honest: the cheapest allowed type that holds every remaining pod at once, else nothing.</summary>
    public static PackingSolution SingleLargeNode(PackingInstance x, DualBound d)
    {
        var st = new Assignment(x, d);
        FillExistingFirstFit(st);
        var remaining = RemainingItemsByCpuThenMemory(st);
        var total = new long[PackingInstance.D];
        var groups = new HashSet<int>();
        bool aaClash = false;
        foreach (int i in remaining)
        {
            int s = x.ShapeOf[i];
            x.Add(total, s, 1);
            if (x.SAa[s] >= 0 && !groups.Add(x.SAa[s])) aaClash = true;
        }
        int best = -1;
        if (remaining.Count > 0 && !aaClash)
        {
            foreach (int t in x.TypesByPrice)
            {
                if (x.MaxCount[t] < 1 || !x.FitsAmount(total, t)) continue;
                bool all = true;
                foreach (int i in remaining) if (!x.TypeOk[x.ShapeOf[i] * x.T + t]) { all = false; break; }
                if (all) { best = t; break; }
            }
        }
        if (best >= 0)
        {
            var bin = st.OpenBin(best);
            foreach (int i in remaining) st.PlaceItem(bin, i);
        }
        else
        {
            string why = aaClash
                ? "single large node: anti-affine pods cannot share one node"
                : $"single large node: no allowed class holds all {remaining.Count} remaining pods ({Demand.Describe(x.ToDemand(total))})";
            foreach (int i in remaining) st.MarkUnplaced(i, x.UnplaceableReason(x.ShapeOf[i]) ?? why);
        }
        return st.ToSolution("karpetrack single large node");
    }

    /// <summary>The baselines' use of free capacity: first fit, pods by CPU then memory.</summary>
    private static void FillExistingFirstFit(Assignment st)
    {
        var x = st.X;
        if (x.E == 0) return;
        foreach (int i in ItemsByCpuThenMemory(st))
        {
            int s = x.ShapeOf[i];
            foreach (var b in st.Existing)
                if (x.BinOk[s * x.E + b.Existing] && st.AaOk(b, s) && st.Fits(b, s)) { st.PlaceItem(b, i); break; }
        }
    }

    private static List<int> ItemsByCpuThenMemory(Assignment st)
    {
        const int D = PackingInstance.D;
        var x = st.X;
        var items = new List<int>();
        for (int i = 0; i < x.N; i++) if (!st.IsDone(i)) items.Add(i);
        items.Sort((a, b) =>
        {
            int sa = x.ShapeOf[a], sb = x.ShapeOf[b];
            int c = x.SDem[sb * D].CompareTo(x.SDem[sa * D]);
            if (c != 0) return c;
            c = x.SDem[sb * D + 1].CompareTo(x.SDem[sa * D + 1]);
            return c != 0 ? c : a.CompareTo(b);
        });
        return items;
    }

    /// <summary>Remaining items in karpetrack's order; items no type takes are reported unplaced here.</summary>
    private static List<int> RemainingItemsByCpuThenMemory(Assignment st)
    {
        var x = st.X;
        var items = ItemsByCpuThenMemory(st);
        foreach (int i in items) if (!x.AnyType[x.ShapeOf[i]]) st.MarkUnplaced(i);
        items.RemoveAll(i => !x.AnyType[x.ShapeOf[i]]);
        return items;
    }
}
