namespace Karpetrack;

/// <summary>
/// Depth-first branch and bound for small problems: items in decreasing dual value go to an existing node,
/// an open bin, or a new bin of each type. The bound is the dual value still to place minus what the open
/// bins' idle capacity can absorb at their own dual prices (a valid bound for the same reason as the root's).
/// Identical items take bins in increasing order and equal open bins are tried once.
/// </summary>
internal sealed class BranchAndBound
{
    private const int D = PackingInstance.D;
    private readonly PackingInstance x;
    private readonly DualBound dual;
    private readonly List<int> items;
    private readonly int n, E;
    private readonly Dictionary<int, int> groupBit;
    private readonly double[] suf;              // dual value of the items from k on
    private readonly int[] binType;             // -1 for an existing bin
    private readonly long[] used;
    private readonly ulong[] mask;              // anti-affinity groups inside, one bit each
    private readonly int[] binOf, bestBinOf;
    private readonly List<int> bestTypes = [];
    private readonly int[] typeCount;
    private readonly int[][] cand;
    private readonly double[][] candKey;
    private readonly long nodeBudget;
    private int nb;
    private double idleWorth;                   // dual worth of the idle capacity of existing and open bins
    private double bestCost;
    private bool found, aborted;
    private long nodes;

    private BranchAndBound(PackingInstance x, DualBound dual, List<int> items, Dictionary<int, int> groupBit, double bestCost, long nodeBudget)
    {
        this.x = x; this.dual = dual; this.items = items; this.groupBit = groupBit; this.bestCost = bestCost; this.nodeBudget = nodeBudget;
        n = items.Count; E = x.E;
        int maxBins = E + n;
        suf = new double[n + 1];
        for (int k = n - 1; k >= 0; k--) suf[k] = suf[k + 1] + dual.Value[x.ShapeOf[items[k]]];
        binType = new int[maxBins];
        used = new long[maxBins * D];
        mask = new ulong[maxBins];
        binOf = new int[n];
        bestBinOf = new int[n];
        nb = E;
        for (int e = 0; e < E; e++) binType[e] = -1;
        for (int e = 0; e < E; e++) for (int r = 0; r < D; r++) idleWorth += Math.Max(0, x.Free[e * D + r]) * dual.WMax[r];
        typeCount = new int[x.T];
        cand = new int[n + 1][];
        candKey = new double[n + 1][];
        for (int k = 0; k <= n; k++) { cand[k] = new int[maxBins]; candKey[k] = new double[maxBins]; }
    }

    /// <summary>
    /// A packing cheaper than <paramref name="incumbent"/>, or the incumbent proven optimal; null when the budget ran out
    /// before either (or there are more than 64 anti-affinity groups).
    /// </summary>
    public static PackingSolution? Run(PackingInstance x, DualBound dual, PackingSolution incumbent, long nodeBudget)
    {
        var items = new List<int>();
        for (int i = 0; i < x.N; i++) { int s = x.ShapeOf[i]; if (x.AnyType[s] || x.AnyBin[s]) items.Add(i); }
        items.Sort((a, b) =>
        {
            int sa = x.ShapeOf[a], sb = x.ShapeOf[b];
            int c = dual.Value[sb].CompareTo(dual.Value[sa]);
            if (c != 0) return c;
            c = sa.CompareTo(sb);
            return c != 0 ? c : a.CompareTo(b);
        });
        var groupBit = new Dictionary<int, int>();
        foreach (int i in items) { int g = x.SAa[x.ShapeOf[i]]; if (g >= 0 && !groupBit.ContainsKey(g)) groupBit[g] = groupBit.Count; }
        if (groupBit.Count > 64) return null;
        bool complete = incumbent.Unplaced.Count == 0;
        var search = new BranchAndBound(x, dual, items, groupBit, complete ? (double)incumbent.Cost : double.PositiveInfinity, nodeBudget);
        search.Dfs(0, 0);
        if (!search.found)
            return search.aborted ? null : incumbent with { Strategy = incumbent.Strategy + " (proven optimal by branch and bound)", ProvenOptimal = complete };
        return search.Best();
    }

    private PackingSolution Best()
    {
        var st = new Assignment(x, dual);
        var opened = new Bin[bestTypes.Count];
        for (int j = 0; j < bestTypes.Count; j++) opened[j] = st.OpenBin(bestTypes[j]);
        for (int k = 0; k < n; k++)
        {
            int b = bestBinOf[k];
            st.PlaceItem(b < E ? st.Existing[b] : opened[b - E], items[k]);
        }
        for (int i = 0; i < x.N; i++) { int s = x.ShapeOf[i]; if (!x.AnyType[s] && !x.AnyBin[s]) st.MarkUnplaced(i); }
        return st.ToSolution(aborted ? "branch and bound (node budget reached: best found)" : "branch and bound (proven optimal)", proven: !aborted);
    }

    private long Cap(int b, int r) => binType[b] >= 0 ? x.Cap[binType[b] * D + r] : x.Free[b * D + r];
    private double W(int b, int r) => binType[b] >= 0 ? dual.W[binType[b] * D + r] : dual.WMax[r];

    private bool Fits(int b, int s)
    {
        for (int r = 0; r < D; r++) if (used[b * D + r] + x.SDem[s * D + r] > Cap(b, r)) return false;
        return true;
    }

    private void Place(int b, int s, int sign)
    {
        for (int r = 0; r < D; r++) { used[b * D + r] += sign * x.SDem[s * D + r]; idleWorth -= sign * x.SDem[s * D + r] * W(b, r); }
        if (x.SAa[s] >= 0) mask[b] ^= 1UL << groupBit[x.SAa[s]];
    }

    private bool Same(int a, int b)
    {
        if (binType[a] != binType[b] || binType[a] < 0 || mask[a] != mask[b]) return false;
        for (int r = 0; r < D; r++) if (used[a * D + r] != used[b * D + r]) return false;
        return true;
    }

    private void Dfs(int k, double cost)
    {
        if (aborted) return;
        if (++nodes > nodeBudget) { aborted = true; return; }
        if (k == n)
        {
            if (cost < bestCost - 5e-7)
            {
                bestCost = cost; found = true;
                Array.Copy(binOf, bestBinOf, n);
                bestTypes.Clear();
                for (int b = E; b < nb; b++) bestTypes.Add(binType[b]);
            }
            return;
        }
        // Prices have at most 6 decimals, so costs that differ at all differ by ≥ 1e-6.
        if (cost + Math.Max(0, suf[k] - idleWorth) > bestCost - 5e-7) return;
        int s = x.ShapeOf[items[k]];
        int nc = Candidates(k, s);
        for (int c = 0; c < nc; c++)
        {
            int b = cand[k][c];
            binOf[k] = b;
            Place(b, s, 1);
            Dfs(k + 1, cost);
            Place(b, s, -1);
            if (aborted) return;
        }
        foreach (int t in x.TypesByPrice)
        {
            if (!x.TypeOk[s * x.T + t] || typeCount[t] >= x.MaxCount[t]) continue;
            if (cost + x.Price[t] > bestCost - 5e-7) break;
            int b = nb++;
            binType[b] = t; mask[b] = 0;
            for (int r = 0; r < D; r++) { used[b * D + r] = 0; idleWorth += x.Cap[t * D + r] * dual.W[t * D + r]; }
            typeCount[t]++;
            binOf[k] = b;
            Place(b, s, 1);
            Dfs(k + 1, cost + x.Price[t]);
            Place(b, s, -1);
            typeCount[t]--;
            for (int r = 0; r < D; r++) idleWorth -= x.Cap[t * D + r] * dual.W[t * D + r];
            nb--;
            if (aborted) return;
        }
    }

    /// <summary>The bins already open that may take item k (of shape s), tightest first by dual waste, equal bins once.</summary>
    private int Candidates(int k, int s)
    {
        int minBin = k > 0 && x.ShapeOf[items[k - 1]] == s ? binOf[k - 1] : 0;
        ulong bit = x.SAa[s] >= 0 ? 1UL << groupBit[x.SAa[s]] : 0;
        int nc = 0;
        for (int b = minBin; b < nb; b++)
        {
            if ((mask[b] & bit) != 0) continue;
            if (b < E ? !x.BinOk[s * E + b] : !x.TypeOk[s * x.T + binType[b]]) continue;
            if (!Fits(b, s)) continue;
            bool dup = false;
            for (int c = 0; c < nc && !dup; c++) dup = Same(cand[k][c], b);
            if (dup) continue;
            double waste = 0;
            for (int r = 0; r < D; r++) waste += W(b, r) * (Cap(b, r) - used[b * D + r] - x.SDem[s * D + r]);
            cand[k][nc] = b; candKey[k][nc] = waste; nc++;
        }
        Array.Sort(candKey[k], cand[k], 0, nc);
        return nc;
    }
}
