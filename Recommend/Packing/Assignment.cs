namespace Karpetrack;

/// <summary>
/// One packing under construction: which items sit in which bin, what is left of each shape, and the moves the
/// heuristics make on it (open a bin, place, remove, mark unplaced), with the measures they choose by.
/// </summary>
internal sealed class Assignment
{
    private const int D = PackingInstance.D;
    private readonly PackingInstance x;
    private readonly DualBound dual;
    public readonly int[] TypeCount;
    public readonly List<Bin> Bins = [];
    public readonly Bin[] Existing;
    private readonly bool[] done;
    private readonly int[] next, rem;
    private readonly List<Unplaced> unplaced = [];

    public Assignment(PackingInstance x, DualBound dual)
    {
        this.x = x; this.dual = dual;
        TypeCount = new int[x.T];
        Existing = new Bin[x.E];
        for (int e = 0; e < x.E; e++) Existing[e] = new Bin(-1, e);
        done = new bool[x.N];
        next = new int[x.S];
        rem = new int[x.S];
        for (int s = 0; s < x.S; s++) rem[s] = x.SItems[s].Length;
    }

    public PackingInstance X => x;
    public DualBound Dual => dual;

    /// <summary>Items of shape s neither placed nor marked unplaced.</summary>
    public int Remaining(int s) => rem[s];
    public bool IsDone(int i) => done[i];

    private long CapOf(Bin b, int r) => b.Type >= 0 ? x.Cap[b.Type * D + r] : x.Free[b.Existing * D + r];
    private double WeightOf(Bin b, int r) => b.Type >= 0 ? dual.W[b.Type * D + r] : dual.WMax[r];
    public bool Allows(Bin b, int s) => b.Type >= 0 ? x.TypeOk[s * x.T + b.Type] : x.BinOk[s * x.E + b.Existing];
    public bool AaOk(Bin b, int s) => x.SAa[s] < 0 || b.Groups is null || !b.Groups.Contains(x.SAa[s]);

    public bool Fits(Bin b, int s, long k = 1)
    {
        for (int r = 0; r < D; r++) if (b.Used[r] + k * x.SDem[s * D + r] > CapOf(b, r)) return false;
        return true;
    }

    public long CopiesFit(Bin b, int s)
    {
        long n = long.MaxValue;
        for (int r = 0; r < D; r++)
        {
            long need = x.SDem[s * D + r];
            if (need <= 0) continue;
            n = Math.Min(n, (CapOf(b, r) - b.Used[r]) / need);
        }
        return Math.Max(0, n);
    }

    /// <summary>Dollars of capacity left idle in b after adding k copies of shape s: smaller is a tighter fit.</summary>
    public double WasteAfter(Bin b, int s, long k)
    {
        double waste = 0;
        for (int r = 0; r < D; r++) waste += WeightOf(b, r) * (CapOf(b, r) - b.Used[r] - k * x.SDem[s * D + r]);
        return waste;
    }

    public Bin OpenBin(int t)
    {
        var b = new Bin(t, -1);
        Bins.Add(b);
        TypeCount[t]++;
        return b;
    }

    public void PlaceItem(Bin b, int i)
    {
        int s = x.ShapeOf[i];
        b.Items.Add(i);
        for (int r = 0; r < D; r++) b.Used[r] += x.SDem[s * D + r];
        if (x.SAa[s] >= 0) (b.Groups ??= []).Add(x.SAa[s]);
        b.Worth += dual.Value[s];
        if (!done[i]) { done[i] = true; rem[s]--; }
    }

    public void RemoveItem(Bin b, int i)
    {
        int s = x.ShapeOf[i];
        b.Items.Remove(i);
        for (int r = 0; r < D; r++) b.Used[r] -= x.SDem[s * D + r];
        if (x.SAa[s] >= 0) b.Groups!.Remove(x.SAa[s]);
        b.Worth -= dual.Value[s];
    }

    public int TakeItem(int s)
    {
        var items = x.SItems[s];
        while (done[items[next[s]]]) next[s]++;
        return items[next[s]];
    }

    public void PlaceCopies(Bin b, int s, long k)
    {
        for (long j = 0; j < k; j++) PlaceItem(b, TakeItem(s));
    }

    public void MarkUnplaced(int i, string? reason = null)
    {
        int s = x.ShapeOf[i];
        if (!done[i]) { done[i] = true; rem[s]--; }
        unplaced.Add(new Unplaced(x.P.Items[i].Id, reason ?? x.UnplaceableReason(s) ?? "could not be placed"));
    }

    public void MarkShapeUnplaced(int s, string reason)
    {
        while (rem[s] > 0) MarkUnplaced(TakeItem(s), reason);
    }

    private double[]? sizeKey;

    /// <summary>
    /// Largest first, by the share of the total demand a shape takes summed over the dimensions: unlike the dual
    /// value, which may price a dimension at zero, this keeps every dimension in the order.
    /// </summary>
    public double SizeOf(int s)
    {
        if (sizeKey is null)
        {
            var total = new double[D];
            for (int q = 0; q < x.S; q++) for (int r = 0; r < D; r++) total[r] += (double)x.SDem[q * D + r] * x.SItems[q].Length;
            sizeKey = new double[x.S];
            for (int q = 0; q < x.S; q++)
                for (int r = 0; r < 3; r++) if (total[r] > 0) sizeKey[q] += x.SDem[q * D + r] / total[r] * (r == 2 ? 1e3 : 1);
        }
        return sizeKey[s];
    }

    /// <summary>
    /// <see cref="CompareShapes"/> order at the cost of a sort of doubles: by size with a primitive sort, then the
    /// rare runs of equal size by the full comparison (a delegate sort of every shape was slow at 100k pods: BENCHMARKS.md).
    /// </summary>
    public void SortShapes(List<int> order)
    {
        int n = order.Count;
        var keys = new double[n];
        var idx = new int[n];
        for (int j = 0; j < n; j++) { idx[j] = order[j]; keys[j] = -SizeOf(order[j]); }
        Array.Sort(keys, idx);
        for (int j = 0; j < n;)
        {
            int end = j + 1;
            while (end < n && keys[end] == keys[j]) end++;
            if (end - j > 1) Array.Sort(idx, j, end - j, Comparer<int>.Create(CompareShapes));
            j = end;
        }
        order.Clear();
        order.AddRange(idx);
    }

    public int CompareShapes(int a, int b)
    {
        int c = SizeOf(b).CompareTo(SizeOf(a));
        if (c != 0) return c;
        c = x.SDem[b * D].CompareTo(x.SDem[a * D]);
        if (c != 0) return c;
        c = x.SDem[b * D + 1].CompareTo(x.SDem[a * D + 1]);
        return c != 0 ? c : x.SItems[a][0].CompareTo(x.SItems[b][0]);
    }

    public string MaxCountReason(int s)
    {
        var full = new List<string>();
        for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) full.Add($"{x.P.Types[t].Name} (max {x.MaxCount[t]})");
        return $"every class that may hold it is at its maximum count: {string.Join(", ", full)}";
    }

    public double Efficiency(Bin b) => b.Worth / Math.Max(x.Price[b.Type], 1e-12);

    public List<Bin> LeastEfficient(int k)
    {
        var live = new List<Bin>(Bins.Count);
        foreach (var b in Bins) if (!b.Removed) live.Add(b);
        var keys = new double[live.Count];
        var idx = new int[live.Count];
        for (int j = 0; j < live.Count; j++) keys[j] = Efficiency(live[j]);
        SortByKey(keys, idx, live.Count, k);
        var list = new List<Bin>(Math.Min(k, live.Count));
        for (int j = 0; j < live.Count && list.Count < k; j++) list.Add(live[idx[j]]);
        return list;
    }

    /// <summary>
    /// Sorts the first n positions by key, and runs of equal keys among the first k by position, so that ties keep list
    /// order: a primitive sort (sorting the ruin-and-repair set twice a round with delegates was a third of its time).
    /// </summary>
    public static void SortByKey(double[] keys, int[] idx, int n, int k)
    {
        for (int j = 0; j < n; j++) idx[j] = j;
        Array.Sort(keys, idx, 0, n);
        for (int j = 0; j < n && j < k;)
        {
            int end = j + 1;
            while (end < n && keys[end] == keys[j]) end++;
            if (end - j > 1) Array.Sort(idx, j, end - j);
            j = end;
        }
    }


    public bool AllAllowed(Bin b, int t)
    {
        foreach (int i in b.Items) if (!x.TypeOk[x.ShapeOf[i] * x.T + t]) return false;
        return true;
    }


    /// <summary>How much of a bin of type t an item of shape s takes: its shares of cpu, memory and GPU, summed.</summary>
    public double Volume(int s, int t)
    {
        double v = 0;
        for (int r = 0; r < 3; r++) if (x.Cap[t * D + r] > 0) v += (double)x.SDem[s * D + r] / x.Cap[t * D + r];
        return v;
    }

    public double Fullness(Bin b)
    {
        double v = 0;
        for (int r = 0; r < 3; r++) if (x.Cap[b.Type * D + r] > 0) v += (double)b.Used[r] / x.Cap[b.Type * D + r];
        return v;
    }

    public PackingSolution ToSolution(string strategy, bool proven = false)
    {
        var bins = new List<PlacedBin>();
        decimal cost = 0;
        foreach (var b in Bins)
        {
            if (b.Removed || b.Items.Count == 0) continue;
            var ids = b.Items.Select(i => x.P.Items[i].Id).Order().ToArray();
            var type = x.P.Types[b.Type];
            bins.Add(new PlacedBin(type, ids, x.ToDemand(b.Used)));
            cost += type.PricePerHour;
        }
        var onExisting = new Dictionary<int, int>();
        foreach (var b in Existing)
            foreach (int i in b.Items.Order()) onExisting[x.P.Items[i].Id] = x.P.Existing[b.Existing].Id;
        var un = unplaced.OrderBy(u => u.Item).ToArray();
        return new PackingSolution(bins, onExisting, un, cost, dual.Reported, strategy) { ProvenOptimal = proven };
    }
}
