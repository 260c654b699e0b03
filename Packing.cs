using System.Globalization;

namespace Karpetrack;

/// <summary>
/// A request or a capacity in the four dimensions the packer honours. The default of one pod suits
/// a pod's demand; a node capacity should say how many pods it takes (see <see cref="Node"/>).
/// </summary>
public readonly record struct Demand(long CpuMilli, long MemoryBytes, long Gpu = 0, long Pods = 1)
{
    public static readonly Demand Zero = new(0, 0, 0, 0);

    /// <summary>A node capacity: kubelet's default of 110 pods unless told otherwise.</summary>
    public static Demand Node(long cpuMilli, long memoryBytes, long gpu = 0, long pods = 110) => new(cpuMilli, memoryBytes, gpu, pods);

    public static Demand operator +(Demand a, Demand b) => new(a.CpuMilli + b.CpuMilli, a.MemoryBytes + b.MemoryBytes, a.Gpu + b.Gpu, a.Pods + b.Pods);
    public static Demand operator -(Demand a, Demand b) => new(a.CpuMilli - b.CpuMilli, a.MemoryBytes - b.MemoryBytes, a.Gpu - b.Gpu, a.Pods - b.Pods);
    public static Demand operator *(Demand a, long k) => new(a.CpuMilli * k, a.MemoryBytes * k, a.Gpu * k, a.Pods * k);

    public bool FitsIn(Demand capacity) =>
        CpuMilli <= capacity.CpuMilli && MemoryBytes <= capacity.MemoryBytes && Gpu <= capacity.Gpu && Pods <= capacity.Pods;

    public bool IsNonNegative => CpuMilli >= 0 && MemoryBytes >= 0 && Gpu >= 0 && Pods >= 0;

    /// <summary>The largest fraction of <paramref name="capacity"/> this takes in any dimension; infinity where it needs what the capacity lacks.</summary>
    public double ShareOf(Demand capacity) =>
        Math.Max(Math.Max(Share(CpuMilli, capacity.CpuMilli), Share(MemoryBytes, capacity.MemoryBytes)), Math.Max(Share(Gpu, capacity.Gpu), Share(Pods, capacity.Pods)));

    /// <summary>How many copies of this fit into <paramref name="capacity"/> (long.MaxValue for an all-zero demand).</summary>
    public long CopiesIn(Demand capacity) =>
        Math.Min(Math.Min(Copies(CpuMilli, capacity.CpuMilli), Copies(MemoryBytes, capacity.MemoryBytes)), Math.Min(Copies(Gpu, capacity.Gpu), Copies(Pods, capacity.Pods)));

    private static double Share(long need, long have) => need <= 0 ? 0 : have <= 0 ? double.PositiveInfinity : (double)need / have;
    private static long Copies(long need, long have) => need <= 0 ? long.MaxValue : have < 0 ? 0 : have / need;

    public override string ToString() => Describe(this);

    internal static string Cores(long milli) => (milli / 1000.0).ToString("0.##", CultureInfo.InvariantCulture) + " cores";
    internal static string GiB(long bytes) => (bytes / 1073741824.0).ToString("0.#", CultureInfo.InvariantCulture) + " GiB";

    internal static string Describe(Demand d)
    {
        var s = $"{Cores(d.CpuMilli)}, {GiB(d.MemoryBytes)}";
        if (d.Gpu != 0) s += $", {d.Gpu} GPU";
        return s;
    }
}

/// <summary>One thing to place: a pod, or anything with a demand. Items of the same AntiAffinityGroup (≥ 0) never share a bin.</summary>
public sealed record PackItem(int Id, Demand Demand, int Constraint, int AntiAffinityGroup = -1);

/// <summary>A node shape one can buy. Capacity = allocatable minus the DaemonSet pods that would land there.</summary>
public sealed record BinType(int Id, string Name, Demand Capacity, decimal PricePerHour, int MaxCount = int.MaxValue);

/// <summary>Capacity already paid for: used first, at no cost.</summary>
public sealed record ExistingBin(int Id, string Name, Demand Free);

/// <summary>
/// The packing problem, free of Kubernetes: the recommender turns node selectors, affinity and taints into
/// compatibility classes (<see cref="PackItem.Constraint"/>) and answers which classes may use which bins.
/// </summary>
public sealed class PackingProblem
{
    public required IReadOnlyList<PackItem> Items { get; init; }
    public required IReadOnlyList<BinType> Types { get; init; }
    public IReadOnlyList<ExistingBin> Existing { get; init; } = [];
    public required Func<int, BinType, bool> TypeAllows { get; init; }
    public required Func<int, ExistingBin, bool> BinAllows { get; init; }
}

public sealed record PlacedBin(BinType Type, IReadOnlyList<int> Items, Demand Used);

public sealed record Unplaced(int Item, string Reason);

/// <summary>
/// Items are ids of <see cref="PackItem"/>; OnExisting maps an item id to an existing bin id. Cost is the hourly
/// price of the new bins; LowerBound is a proven lower bound on that cost for the items placed.
/// </summary>
public sealed record PackingSolution(
    IReadOnlyList<PlacedBin> NewBins,
    IReadOnlyDictionary<int, int> OnExisting,
    IReadOnlyList<Unplaced> Unplaced,
    decimal Cost,
    decimal LowerBound,
    string Strategy)
{
    /// <summary>True when the search proved Cost optimal (small problems only).</summary>
    public bool ProvenOptimal { get; init; }
}

public sealed record PackingOptions
{
    /// <summary>Remaining shapes a bin's fill scans from the large end and again from the small end: bounds the work per bin.</summary>
    public int ScanLimit { get; init; } = 2000;
    /// <summary>Least-efficient bins the local search tries to empty, and (a quarter of them) to merge pairwise.</summary>
    public int LocalSearchBins { get; init; } = 256;
    /// <summary>
    /// Above this many items the local search only downsizes bins: after the balanced fill its emptying and merging
    /// moves found nothing on the bench mixes at 10k and 100k pods and cost up to 60 ms at 10k; ruin and repair does
    /// that job within a fixed budget. (At 3k pods of the sjc-like test mix they still saved 0.7 %.)
    /// </summary>
    public int LocalSearchItems { get; init; } = 5_000;
    /// <summary>Up to this many items an exhaustive search polishes the result, bounded by <see cref="ExactNodes"/>.</summary>
    public int ExactItems { get; init; } = 30;
    /// <summary>Search nodes, not time, so the answer does not depend on the machine.</summary>
    public long ExactNodes { get; init; } = 400_000;
    /// <summary>Up to this many items karpetrack's three strategies also run and the cheapest complete result wins.</summary>
    public int PortfolioItems { get; init; } = 400;
    /// <summary>
    /// Fit tests the ruin-and-repair phase may spend, whatever the problem's size; it stops early when no round
    /// gains. 1M found what 4M found on the bench mixes (1k and 10k pods) in a quarter of the time; 500k lost 0.1 point.
    /// </summary>
    public long ImproveWork { get; init; } = 1_000_000;
    /// <summary>Least full bins that trade with the pool in a ruin-and-repair round.</summary>
    public int ImprovePartners { get; init; } = 64;
    /// <summary>Ruin-and-repair rounds in a row without a lower cost after which the phase stops.</summary>
    public int ImproveIdleRounds { get; init; } = 24;
    /// <summary>
    /// Bins the ruin-and-repair phase works on: half the least efficient by the dual, the rest the least full. 512, not
    /// 256, since the least full joined: at 10k pods on the real iad prices the least efficient hold no room to trade with.
    /// </summary>
    public int ImproveBins { get; init; } = 512;
    /// <summary>Bins emptied into the pool per ruin-and-repair round.</summary>
    public int ImproveVictims { get; init; } = 3;
    /// <summary>
    /// The greedy fills each bin along the line to its full corner, cpu and memory together (on by default); off
    /// gives the previous largest-memory-first fill, kept so tests can compare the two.
    /// </summary>
    internal bool BalancedFill { get; init; } = true;
}

/// <summary>
/// Variable-sized, multi-dimensional bin packing with costs: existing free capacity first, then new bins
/// chosen by the share of remaining demand they absorb per dollar, then local search; a dual (LP) lower
/// bound comes with every answer. Pure and deterministic: no I/O, no clock, ties broken by ids.
/// </summary>
public static class Packer
{
    public static PackingSolution Solve(PackingProblem p, PackingOptions? o = null)
    {
        o ??= new PackingOptions();
        var x = new Instance(p);
        var dual = DualBound.Compute(x);
        var st = new State(x, dual);
        st.FillExisting();
        st.Greedy(o);
        if (x.PlaceableItems <= o.LocalSearchItems) st.LocalSearch(o); else st.DownsizeOnly();
        st.Improve(o);
        var best = st.ToSolution(o.ImproveWork > 0 ? "cost-aware greedy + local search + ruin and repair" : "cost-aware greedy + local search");
        int placeable = x.PlaceableItems;
        if (placeable <= o.PortfolioItems)
        {
            foreach (var alt in new[] { FirstFitDecreasing(x, dual), BestFit(x, dual), SingleLargeNode(x, dual) })
                if (alt.Unplaced.Count <= best.Unplaced.Count && alt.Cost < best.Cost)
                    best = alt with { Strategy = "portfolio: " + alt.Strategy };
        }
        if (placeable <= o.ExactItems)
        {
            var exact = Search.Run(x, dual, best, o.ExactNodes);
            if (exact is not null) best = exact;
        }
        return best;
    }

    public static decimal LowerBound(PackingProblem p)
    {
        var x = new Instance(p);
        return DualBound.Compute(x).Reported;
    }

    public static PackingSolution FirstFitDecreasing(PackingProblem p) { var x = new Instance(p); return FirstFitDecreasing(x, DualBound.Compute(x)); }
    public static PackingSolution BestFit(PackingProblem p) { var x = new Instance(p); return BestFit(x, DualBound.Compute(x)); }
    public static PackingSolution SingleLargeNode(PackingProblem p) { var x = new Instance(p); return SingleLargeNode(x, DualBound.Compute(x)); }

    /// <summary>
    /// Branch and bound over all placements; exact when it finishes (ProvenOptimal). The budget is turned into a
    /// node count at a fixed rate so that the answer never depends on the machine's speed.
    /// </summary>
    public static PackingSolution Exact(PackingProblem p, TimeSpan? budget = null)
    {
        var x = new Instance(p);
        var dual = DualBound.Compute(x);
        var st = new State(x, dual);
        st.FillExisting();
        st.Greedy(new PackingOptions());
        st.LocalSearch(new PackingOptions());
        var start = st.ToSolution("cost-aware greedy + local search");
        long nodes = (long)Math.Min(2e9, (budget ?? TimeSpan.FromSeconds(10)).TotalMilliseconds * 5_000);
        return Search.Run(x, dual, start, nodes) ?? start with { Strategy = "exact: no complete packing found; heuristic result" };
    }

    internal static PackingSolution FirstFitDecreasing(Instance x, DualBound d) => Karpetrack(x, d, "karpetrack FFD", utilisation: false);
    internal static PackingSolution BestFit(Instance x, DualBound d) => Karpetrack(x, d, "karpetrack best-fit", utilisation: true);

    /// <summary>
    /// karpetrack's loop (spot-api.md §5.3): pods by CPU then memory, descending; for every type fill a fresh node
    /// first-fit from the remaining pods, open the best-scoring one. Honest where karpetrack was not: constraints,
    /// GPUs and MaxCount are respected, existing free capacity is used first-fit, unplaceable pods are reported.
    /// </summary>
    private static PackingSolution Karpetrack(Instance x, DualBound d, string name, bool utilisation)
    {
        var st = new State(x, d);
        st.FillExistingFirstFit();
        var remaining = st.RemainingItemsByCpuThenMemory();
        var typeOrder = x.TypesByEfficiency();
        var used = new long[Instance.D];
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
    internal static PackingSolution SingleLargeNode(Instance x, DualBound d)
    {
        var st = new State(x, d);
        st.FillExistingFirstFit();
        var remaining = st.RemainingItemsByCpuThenMemory();
        var total = new long[Instance.D];
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
}

/// <summary>
/// The problem flattened into arrays, with identical items (same demand, constraint and anti-affinity group)
/// grouped into shapes so that work scales with distinct shapes, not pods.
/// </summary>
internal sealed class Instance
{
    public const int D = 4;
    public readonly PackingProblem P;
    public readonly int N, T, E, S;
    public readonly long[] Cap;        // T×D
    public readonly double[] Price;
    public readonly int[] MaxCount;
    public readonly long[] Free;       // E×D
    public readonly int[] ShapeOf;     // item index → shape
    public readonly long[] SDem;       // S×D
    public readonly int[] SCon, SAa;
    public readonly int[][] SItems;    // item indices, ascending
    public readonly bool[] TypeOk;     // S×T: constraint allows, fits, GPU rule
    public readonly bool[] BinOk;      // S×E: constraint allows, fits the free capacity
    public readonly bool[] AnyType, AnyBin;
    public readonly int[] TypesByPrice;
    public readonly int PlaceableItems;

    public Instance(PackingProblem p)
    {
        P = p;
        N = p.Items.Count; T = p.Types.Count; E = p.Existing.Count;
        Cap = new long[T * D]; Price = new double[T]; MaxCount = new int[T];
        for (int t = 0; t < T; t++)
        {
            var b = p.Types[t];
            Put(Cap, t, b.Capacity);
            Price[t] = (double)b.PricePerHour;
            MaxCount[t] = Math.Max(0, b.MaxCount);
        }
        Free = new long[E * D];
        for (int e = 0; e < E; e++) Put(Free, e, p.Existing[e].Free);

        // Shapes by sorting, not hashing: items sorted by (constraint, group, gpu, pods, cpu, memory, index) make each
        // shape a run of items in ascending order, and number the shapes so that those of one constraint and cpu are
        // neighbours in memory order: the fill's searches walk them in that order (a dictionary of 100k shapes in input
        // order cost up to 100 ms and a cache miss per shape touched).
        ShapeOf = new int[N];
        var keys = new ItemKey[N];
        for (int i = 0; i < N; i++)
        {
            var it = p.Items[i];
            keys[i] = new ItemKey(it.Constraint, it.AntiAffinityGroup < 0 ? -1 : it.AntiAffinityGroup, it.Demand, i);
        }
        Array.Sort(keys);
        int shapes = 0;
        for (int j = 0; j < N; j++) if (j == 0 || !keys[j].SameShape(keys[j - 1])) shapes++;
        S = shapes;
        SDem = new long[S * D]; SCon = new int[S]; SAa = new int[S]; SItems = new int[S][];
        for (int j = 0, s = 0; j < N; s++)
        {
            int end = j + 1;
            while (end < N && keys[end].SameShape(keys[j])) end++;
            var k = keys[j];
            Put(SDem, s, k.Demand); SCon[s] = k.Con; SAa[s] = k.Aa;
            var members = new int[end - j];
            for (int m = j; m < end; m++) { members[m - j] = keys[m].Index; ShapeOf[keys[m].Index] = s; }
            SItems[s] = members;
            j = end;
        }

        // Delegates are called once per (constraint class, bin), never per item.
        var typeByCon = new Dictionary<int, bool[]>();
        var binByCon = new Dictionary<int, bool[]>();
        TypeOk = new bool[S * T]; BinOk = new bool[S * E]; AnyType = new bool[S]; AnyBin = new bool[S];
        for (int s = 0; s < S; s++)
        {
            if (!typeByCon.TryGetValue(SCon[s], out var ta))
            {
                ta = new bool[T];
                for (int t = 0; t < T; t++) ta[t] = p.TypeAllows(SCon[s], p.Types[t]);
                typeByCon[SCon[s]] = ta;
            }
            if (!binByCon.TryGetValue(SCon[s], out var ba))
            {
                ba = new bool[E];
                for (int e = 0; e < E; e++) ba[e] = p.BinAllows(SCon[s], p.Existing[e]);
                binByCon[SCon[s]] = ba;
            }
            bool nonGpuTypeFits = false;
            for (int t = 0; t < T; t++)
            {
                bool ok = ta[t] && MaxCount[t] > 0 && DemandFits(SDem, s, Cap, t);
                TypeOk[s * T + t] = ok;
                if (ok && Cap[t * D + 2] == 0) nonGpuTypeFits = true;
            }
            // GPU classes are expensive: a pod that needs no GPU goes there only when nothing else takes it.
            if (SDem[s * D + 2] == 0 && nonGpuTypeFits)
                for (int t = 0; t < T; t++) if (Cap[t * D + 2] > 0) TypeOk[s * T + t] = false;
            for (int t = 0; t < T; t++) AnyType[s] |= TypeOk[s * T + t];
            for (int e = 0; e < E; e++)
            {
                BinOk[s * E + e] = ba[e] && DemandFits(SDem, s, Free, e);
                AnyBin[s] |= BinOk[s * E + e];
            }
            if (AnyType[s] || AnyBin[s]) PlaceableItems += SItems[s].Length;
        }
        TypesByPrice = [.. Enumerable.Range(0, T).OrderBy(t => Price[t]).ThenBy(t => p.Types[t].Id).ThenBy(t => t)];
    }

    // Compared through IComparable rather than an IComparer object: the sort then calls CompareTo directly, not through
    // an interface (building the instance took 3 ms at 10k items, half of it in that sort).
    private readonly record struct ItemKey(int Con, int Aa, Demand Demand, int Index) : IComparable<ItemKey>
    {
        public bool SameShape(in ItemKey o) => Con == o.Con && Aa == o.Aa && Demand == o.Demand;

        public int CompareTo(ItemKey b)
        {
            int c = Con.CompareTo(b.Con);
            if (c == 0) c = Aa.CompareTo(b.Aa);
            if (c == 0) c = Demand.Gpu.CompareTo(b.Demand.Gpu);
            if (c == 0) c = Demand.Pods.CompareTo(b.Demand.Pods);
            if (c == 0) c = Demand.CpuMilli.CompareTo(b.Demand.CpuMilli);
            if (c == 0) c = Demand.MemoryBytes.CompareTo(b.Demand.MemoryBytes);
            return c != 0 ? c : Index.CompareTo(b.Index);
        }
    }

    private static void Put(long[] a, int k, Demand d)
    {
        a[k * D] = d.CpuMilli; a[k * D + 1] = d.MemoryBytes; a[k * D + 2] = d.Gpu; a[k * D + 3] = d.Pods;
    }

    public Demand ToDemand(long[] a, int k = 0) => new(a[k * D], a[k * D + 1], a[k * D + 2], a[k * D + 3]);
    public Demand ShapeDemand(int s) => ToDemand(SDem, s);

    private static bool DemandFits(long[] dem, int s, long[] cap, int k) =>
        dem[s * D] <= cap[k * D] && dem[s * D + 1] <= cap[k * D + 1] && dem[s * D + 2] <= cap[k * D + 2] && dem[s * D + 3] <= cap[k * D + 3];

    /// <summary>Does one more of shape s fit on top of <paramref name="used"/> in a bin of type t?</summary>
    public bool FitsOnType(int s, long[] used, int t)
    {
        int a = s * D, c = t * D;
        return used[0] + SDem[a] <= Cap[c] && used[1] + SDem[a + 1] <= Cap[c + 1] && used[2] + SDem[a + 2] <= Cap[c + 2] && used[3] + SDem[a + 3] <= Cap[c + 3];
    }

    public bool FitsAmount(long[] used, int t) =>
        used[0] <= Cap[t * D] && used[1] <= Cap[t * D + 1] && used[2] <= Cap[t * D + 2] && used[3] <= Cap[t * D + 3];

    public void Add(long[] used, int s, long k)
    {
        for (int r = 0; r < D; r++) used[r] += k * SDem[s * D + r];
    }

    /// <summary>Copies of shape s that fit into what is left of <paramref name="cap"/> after <paramref name="used"/>.</summary>
    public long Copies(int s, long[] used, long[] cap, int k)
    {
        long n = long.MaxValue;
        for (int r = 0; r < D; r++)
        {
            long need = SDem[s * D + r];
            if (need <= 0) { if (used[r] > cap[k * D + r]) return 0; continue; }
            long left = cap[k * D + r] - used[r];
            if (left < need) return 0;
            n = Math.Min(n, left / need);
        }
        return n;
    }

    /// <summary>karpetrack's node order: (vCPU + memory GiB) per dollar, best first.</summary>
    public int[] TypesByEfficiency() =>
        [.. Enumerable.Range(0, T).OrderByDescending(t => (Cap[t * D] / 1000.0 + Cap[t * D + 1] / 1073741824.0) / Math.Max(Price[t], 1e-12)).ThenBy(t => t)];

    /// <summary>Why shape s cannot go to any new bin, or null when some type takes it.</summary>
    public string? UnplaceableReason(int s)
    {
        if (AnyType[s]) return null;
        var need = ShapeDemand(s);
        var allowed = new List<int>();
        for (int t = 0; t < T; t++) if (P.TypeAllows(SCon[s], P.Types[t])) allowed.Add(t);
        string existing = AnyBin[s] ? "; the existing nodes it may use are full" : "";
        if (allowed.Count == 0)
            return T == 0 ? "no server classes to choose from" + existing : $"no allowed server class (constraint {SCon[s]} excludes all {T} classes){existing}";
        var withRoom = allowed.Where(t => MaxCount[t] > 0).ToList();
        if (withRoom.Count == 0) return $"every allowed class has a maximum count of 0 ({string.Join(", ", allowed.Select(t => P.Types[t].Name))}){existing}";
        if (need.Gpu > 0 && withRoom.All(t => Cap[t * D + 2] == 0))
            return $"needs {need.Gpu} GPU; none of the {withRoom.Count} allowed classes has a GPU{existing}";
        // The class that comes closest: the smallest worst shortfall over the dimensions.
        int best = withRoom.OrderBy(t => need.ShareOf(ToDemand(Cap, t))).ThenBy(t => t).First();
        var cap = ToDemand(Cap, best);
        string needText = Demand.Describe(need), capText = Demand.Describe(cap);
        if (need.Pods > cap.Pods) { needText += $", {need.Pods} pods"; capText += $", {cap.Pods} pods"; }
        if (need.Gpu > 0 && cap.Gpu == 0) capText += ", 0 GPU";
        return $"needs {needText}; the largest allowed class {P.Types[best].Name} has {capText}{existing}";
    }
}

/// <summary>
/// The dual of the LP relaxation "each item split over the types it may use, each type bought fractionally":
/// per type t a price vector w_t over the dimensions with capacity·w_t = price_t; an item is then worth the
/// cheapest w_t·demand over its allowed types, and the sum over items is a lower bound on any packing for
/// every such w (weak duality), so any w found is safe and a better search only tightens the bound.
/// Capacities are first rounded down to the gcd of the demands in each dimension (no packing can fill the rest).
/// </summary>
internal sealed class DualBound
{
    public readonly double[] W;          // T×D
    public readonly double[] Value;      // per shape: worth of one copy (0 when no type takes it)
    public readonly double[] WMax;       // per dimension: max over types, prices existing capacity
    public readonly decimal Reported;    // max of the valid bounds below, for the items that need new bins

    private DualBound(double[] w, double[] value, double[] wmax, decimal reported) { W = w; Value = value; WMax = wmax; Reported = reported; }

    public static DualBound Compute(Instance x)
    {
        const int D = Instance.D;
        int S = x.S, T = x.T;
        var capEff = EffectiveCapacities(x);
        var groups = Compress(x, out var gDem, out var gCount, out var gTypes);
        var w = Optimise(x, capEff, groups, gDem, gCount, gTypes);

        var value = new double[S];
        var wmax = new double[D];
        for (int t = 0; t < T; t++) for (int r = 0; r < D; r++) wmax[r] = Math.Max(wmax[r], w[t * D + r]);
        double all = 0, mustNew = 0, existingWorth = 0;
        for (int s = 0; s < S; s++)
        {
            double best = double.PositiveInfinity;
            for (int t = 0; t < T; t++)
            {
                if (!x.TypeOk[s * T + t]) continue;
                double v = 0;
                for (int r = 0; r < D; r++) v += x.SDem[s * D + r] * w[t * D + r];
                best = Math.Min(best, v);
            }
            value[s] = double.IsPositiveInfinity(best) ? 0 : best;
            all += value[s] * x.SItems[s].Length;
            if (!x.AnyBin[s]) mustNew += value[s] * x.SItems[s].Length;
        }
        for (int e = 0; e < x.E; e++) for (int r = 0; r < D; r++) existingWorth += Math.Max(0, x.Free[e * D + r]) * wmax[r];
        double lp = Math.Max(mustNew, all - existingWorth);
        double bound = Math.Max(lp, Solitary(x, capEff));
        // Float rounding must never lift the bound above the truth.
        decimal reported = bound <= 0 ? 0m : (decimal)(bound * (1 - 1e-9));
        // A cost is a sum of prices: when every price is a whole number of millionths so is the optimum, and
        // the bound may be rounded up to the next millionth (this also removes the float margin above).
        if (reported > 0 && x.P.Types.All(t => decimal.Round(t.PricePerHour, 6) == t.PricePerHour))
            reported = Math.Ceiling(reported * 1_000_000m) / 1_000_000m;
        return new DualBound(w, value, wmax, reported);
    }

    private static long[] EffectiveCapacities(Instance x)
    {
        const int D = Instance.D;
        var gcd = new long[D];
        for (int s = 0; s < x.S; s++)
        {
            if (!x.AnyType[s]) continue;
            for (int r = 0; r < D; r++) gcd[r] = Gcd(gcd[r], x.SDem[s * D + r]);
        }
        var cap = new long[x.T * D];
        for (int t = 0; t < x.T; t++)
            for (int r = 0; r < D; r++)
                cap[t * D + r] = gcd[r] > 1 ? x.Cap[t * D + r] / gcd[r] * gcd[r] : x.Cap[t * D + r];
        return cap;
    }

    private static long Gcd(long a, long b)
    {
        a = Math.Abs(a); b = Math.Abs(b);
        while (b != 0) (a, b) = (b, a % b);
        return a;
    }

    /// <summary>
    /// Items that each take more than half of one dimension of every type they may use can never share a bin;
    /// nor can members of one anti-affinity group. Each then needs a bin of its own, at least the cheapest it may use.
    /// </summary>
    private static double Solitary(Instance x, long[] capEff)
    {
        const int D = Instance.D;
        var perDim = new double[D];
        var perGroup = new Dictionary<int, double>();
        for (int s = 0; s < x.S; s++)
        {
            if (!x.AnyType[s] || x.AnyBin[s]) continue;
            double cheapest = double.PositiveInfinity;
            for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) cheapest = Math.Min(cheapest, x.Price[t]);
            int n = x.SItems[s].Length;
            for (int r = 0; r < D; r++)
            {
                long need = x.SDem[s * D + r];
                if (need <= 0) continue;
                bool big = true;
                for (int t = 0; t < x.T && big; t++) if (x.TypeOk[s * x.T + t] && 2 * need <= capEff[t * D + r]) big = false;
                if (big) perDim[r] += cheapest * n;
            }
            if (x.SAa[s] >= 0) perGroup[x.SAa[s]] = perGroup.GetValueOrDefault(x.SAa[s]) + cheapest * n;
        }
        double best = perDim.Max();
        foreach (var v in perGroup.Values) best = Math.Max(best, v);
        return best;
    }

    /// <summary>
    /// Shapes for the search of w, with demands rounded down onto a geometric grid (the group keeps the
    /// component-wise minimum, so it never overstates anything) until there are few enough to iterate over.
    /// </summary>
    private static List<int> Compress(Instance x, out long[] gDem, out double[] gCount, out int[][] gTypes)
    {
        const int D = Instance.D, Target = 300;
        int S = x.S, T = x.T;
        var sig = new int[S];
        var sigIndex = new Dictionary<string, int>();
        var sigTypes = new List<int[]>();
        var row = new char[T];
        for (int s = 0; s < S; s++)
        {
            if (!x.AnyType[s]) { sig[s] = -1; continue; }
            for (int t = 0; t < T; t++) row[t] = x.TypeOk[s * T + t] ? '1' : '0';
            var key = new string(row);
            if (!sigIndex.TryGetValue(key, out int id))
            {
                id = sigTypes.Count; sigIndex[key] = id;
                var ts = new List<int>();
                for (int t = 0; t < T; t++) if (x.TypeOk[s * T + t]) ts.Add(t);
                sigTypes.Add([.. ts]);
            }
            sig[s] = id;
        }
        // Logarithms once per shape; the grid is searched on a fixed subsample (every stride-th shape) and only the
        // final grid is applied to all shapes, so that many distinct shapes cost one pass, not twelve.
        var logs = new double[S * D];
        for (int s = 0; s < S * D; s++) logs[s] = x.SDem[s] > 0 ? Math.Log(x.SDem[s]) : 0;
        long Bucket(int s, int r, double lg) => x.SDem[s * D + r] <= 0 ? -1 : lg == 0 ? x.SDem[s * D + r] : (long)Math.Floor(logs[s * D + r] / lg);
        (int, long, long, long, long) Key(int s, double lg) => (sig[s], Bucket(s, 0, lg), Bucket(s, 1, lg), Bucket(s, 2, lg), Bucket(s, 3, lg));
        int stride = Math.Max(1, S / (8 * Target));
        double step = 0;
        Dictionary<(int, long, long, long, long), int> map = [];
        for (int attempt = 0; attempt < 16; attempt++)
        {
            double lg = step > 0 ? Math.Log(1 + step) : 0;
            bool sampled = stride > 1 && attempt < 15;
            map = [];
            for (int s = 0; s < S; s += sampled ? stride : 1)
            {
                if (sig[s] < 0) continue;
                map.TryAdd(Key(s, lg), map.Count);
                if (map.Count > Target) break;
            }
            if (map.Count <= Target && sampled)
            {
                // The grid the sample accepts, on every shape: at most twice the target, else coarser.
                map = [];
                for (int s = 0; s < S; s++) if (sig[s] >= 0) map.TryAdd(Key(s, lg), map.Count);
                if (map.Count <= 2 * Target) break;
            }
            else if (map.Count <= Target) break;
            step = step == 0 ? 0.002 : step * 2;
        }
        int G = map.Count;
        gDem = new long[G * D]; gCount = new double[G]; gTypes = new int[G][];
        Array.Fill(gDem, long.MaxValue);
        double lg2 = step > 0 ? Math.Log(1 + step) : 0;
        for (int s = 0; s < S; s++)
        {
            if (sig[s] < 0) continue;
            int g = map[Key(s, lg2)];
            for (int r = 0; r < D; r++) gDem[g * D + r] = Math.Min(gDem[g * D + r], x.SDem[s * D + r]);
            gCount[g] += x.SItems[s].Length;
            gTypes[g] = sigTypes[sig[s]];
        }
        return [.. Enumerable.Range(0, G)];
    }

    /// <summary>
    /// Coordinate ascent on the (concave, piecewise linear) dual: for one type at a time, shift weight between two
    /// dimensions to the exact maximum along that line. Stops when a round gains less than 1e-6.
    /// </summary>
    private static double[] Optimise(Instance x, long[] capEff, List<int> groups, long[] gDem, double[] gCount, int[][] gTypes)
    {
        const int D = Instance.D;
        int T = x.T, G = groups.Count;
        var a = new double[T * D];
        var w = new double[T * D];
        var active = new List<int>[T];
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
        if (G == 0) return w;

        var val = new double[G * T];
        var typeGroups = new List<int>[T];
        for (int t = 0; t < T; t++) typeGroups[t] = [];
        for (int g = 0; g < G; g++) foreach (int t in gTypes[g]) typeGroups[t].Add(g);
        void Eval(int t)
        {
            foreach (int g in typeGroups[t])
            {
                double v = 0;
                for (int r = 0; r < D; r++) v += gDem[g * D + r] * w[t * D + r];
                val[g * T + t] = v;
            }
        }
        for (int t = 0; t < T; t++) Eval(t);
        double Total()
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

        var other = new double[G];
        var events = new (double At, double Drop)[G];
        double current = Total();
        var saved = new double[T * D];
        // Shifts weight between two dimensions in every type at once: types of equal price and similar shape
        // tie for most items, and a move on one of them alone changes no item's cheapest type.
        double Shifted(int r1, int r2, double delta)
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
        void GlobalMoves()
        {
            for (int r1 = 0; r1 < D; r1++)
                for (int r2 = r1 + 1; r2 < D; r2++)
                {
                    // A pair of dimensions no type prices both of (GPU in a mix without GPUs) cannot move anything:
                    // 26 evaluations of the whole dual saved per such pair.
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
        // Also start from "price everything by one resource" for each resource: the classic volume bounds.
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
        for (int round = 0; round < 12; round++)
        {
            double before = current;
            if (round < 2) GlobalMoves();
            for (int t = 0; t < T; t++)
            {
                var act = active[t];
                if (act.Count < 2) continue;
                var tg = typeGroups[t];
                for (int k = 0; k < tg.Count; k++)
                {
                    int g = tg[k];
                    double m = double.PositiveInfinity;
                    foreach (int u in gTypes[g]) if (u != t) m = Math.Min(m, val[g * T + u]);
                    other[k] = m;
                }
                for (int i = 0; i < act.Count; i++)
                    for (int j = i + 1; j < act.Count; j++)
                    {
                        int r1 = act[i], r2 = act[j];
                        double c1 = x.Price[t] / capEff[t * D + r1], c2 = x.Price[t] / capEff[t * D + r2];
                        double lo = -a[t * D + r1], hi = a[t * D + r2];
                        // Moving δ of weight from r2 to r1 changes a group's cost on t by δ·slope.
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
                        Array.Sort(events, 0, ne, EventOrder.Instance);
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
                        if (Math.Abs(best) < 1e-15) continue;
                        // Apply tentatively and keep only a real gain.
                        double gain = 0;
                        for (int k = 0; k < tg.Count; k++)
                        {
                            int g = tg[k];
                            double v = val[g * T + t], o = other[k];
                            double nv = v + best * (gDem[g * D + r1] * c1 - gDem[g * D + r2] * c2);
                            gain += gCount[g] * (Math.Min(o, nv) - Math.Min(o, v));
                        }
                        if (gain <= 1e-12 * Math.Max(1, current)) continue;
                        a[t * D + r1] += best; a[t * D + r2] -= best;
                        if (a[t * D + r1] < 0) a[t * D + r1] = 0;
                        if (a[t * D + r2] < 0) a[t * D + r2] = 0;
                        w[t * D + r1] = x.Price[t] * a[t * D + r1] / capEff[t * D + r1];
                        w[t * D + r2] = x.Price[t] * a[t * D + r2] / capEff[t * D + r2];
                        Eval(t);
                        current += gain;
                    }
            }
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

    private sealed class EventOrder : IComparer<(double At, double Drop)>
    {
        public static readonly EventOrder Instance = new();
        public int Compare((double At, double Drop) a, (double At, double Drop) b) => a.At.CompareTo(b.At);
    }
}

/// <summary>A bin while packing: a new bin of a type, or an existing node's free capacity.</summary>
internal sealed class Bin(int type, int existing)
{
    public int Type = type;                 // new-bin type index, or -1
    public readonly int Existing = existing; // existing bin index, or -1
    public readonly long[] Used = new long[Instance.D];
    public readonly List<int> Items = [];
    public List<int>? Groups;               // anti-affinity groups inside
    public double Worth;                    // dual value of the items inside
    public bool Removed;
    public bool Tried;                      // emptied by a ruin-and-repair round since the cost last fell
}

/// <summary>One packing under construction, with the moves the heuristics make on it.</summary>
internal sealed class State
{
    private const int D = Instance.D;
    private readonly Instance x;
    private readonly DualBound dual;
    public readonly int[] TypeCount;
    public readonly List<Bin> Bins = [];
    public readonly Bin[] Existing;
    private readonly bool[] done;
    private readonly int[] next, rem;
    private readonly List<Unplaced> unplaced = [];

    public State(Instance x, DualBound dual)
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

    private long CapOf(Bin b, int r) => b.Type >= 0 ? x.Cap[b.Type * D + r] : x.Free[b.Existing * D + r];
    private double WeightOf(Bin b, int r) => b.Type >= 0 ? dual.W[b.Type * D + r] : dual.WMax[r];
    private bool Allows(Bin b, int s) => b.Type >= 0 ? x.TypeOk[s * x.T + b.Type] : x.BinOk[s * x.E + b.Existing];
    private bool AaOk(Bin b, int s) => x.SAa[s] < 0 || b.Groups is null || !b.Groups.Contains(x.SAa[s]);

    private bool Fits(Bin b, int s, long k = 1)
    {
        for (int r = 0; r < D; r++) if (b.Used[r] + k * x.SDem[s * D + r] > CapOf(b, r)) return false;
        return true;
    }

    private long CopiesFit(Bin b, int s)
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
    private double WasteAfter(Bin b, int s, long k)
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

    private void RemoveItem(Bin b, int i)
    {
        int s = x.ShapeOf[i];
        b.Items.Remove(i);
        for (int r = 0; r < D; r++) b.Used[r] -= x.SDem[s * D + r];
        if (x.SAa[s] >= 0) b.Groups!.Remove(x.SAa[s]);
        b.Worth -= dual.Value[s];
    }

    private int TakeItem(int s)
    {
        var items = x.SItems[s];
        while (done[items[next[s]]]) next[s]++;
        return items[next[s]];
    }

    private void PlaceCopies(Bin b, int s, long k)
    {
        for (long j = 0; j < k; j++) PlaceItem(b, TakeItem(s));
    }

    public void MarkUnplaced(int i, string? reason = null)
    {
        int s = x.ShapeOf[i];
        if (!done[i]) { done[i] = true; rem[s]--; }
        unplaced.Add(new Unplaced(x.P.Items[i].Id, reason ?? x.UnplaceableReason(s) ?? "could not be placed"));
    }

    private void MarkShapeUnplaced(int s, string reason)
    {
        while (rem[s] > 0) MarkUnplaced(TakeItem(s), reason);
    }

    private double[]? sizeKey;

    /// <summary>
    /// Largest first, by the share of the total demand a shape takes summed over the dimensions: unlike the dual
    /// value, which may price a dimension at zero, this keeps every dimension in the order.
    /// </summary>
    private double SizeOf(int s)
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
    /// rare runs of equal size by the full comparison (a delegate sort of 100k shapes took 30-60 ms).
    /// </summary>
    private void SortShapes(List<int> order)
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

    private int CompareShapes(int a, int b)
    {
        int c = SizeOf(b).CompareTo(SizeOf(a));
        if (c != 0) return c;
        c = x.SDem[b * D].CompareTo(x.SDem[a * D]);
        if (c != 0) return c;
        c = x.SDem[b * D + 1].CompareTo(x.SDem[a * D + 1]);
        return c != 0 ? c : x.SItems[a][0].CompareTo(x.SItems[b][0]);
    }

    /// <summary>
    /// Free capacity is already paid for: the most valuable items (by the dual) go there first, each to the
    /// existing node it fits tightest; items that only fit existing nodes come before all others.
    /// </summary>
    public void FillExisting()
    {
        if (x.E == 0) return;
        var order = new List<int>();
        for (int s = 0; s < x.S; s++) if (x.AnyBin[s]) order.Add(s);
        order.Sort((a, b) => x.AnyType[a] != x.AnyType[b] ? (x.AnyType[a] ? 1 : -1) : CompareShapes(a, b));
        foreach (int s in order)
        {
            while (rem[s] > 0)
            {
                Bin? best = null;
                double bestWaste = double.PositiveInfinity;
                foreach (var b in Existing)
                {
                    if (!x.BinOk[s * x.E + b.Existing] || !AaOk(b, s) || !Fits(b, s)) continue;
                    double waste = WasteAfter(b, s, 1);
                    if (waste < bestWaste) { bestWaste = waste; best = b; }
                }
                if (best is null) break;
                long k = Math.Min(rem[s], x.SAa[s] >= 0 ? 1 : CopiesFit(best, s));
                PlaceCopies(best, s, k);
            }
        }
    }

    /// <summary>The baselines' use of free capacity: first fit, pods by CPU then memory.</summary>
    public void FillExistingFirstFit()
    {
        if (x.E == 0) return;
        foreach (int i in ItemsByCpuThenMemory())
        {
            int s = x.ShapeOf[i];
            foreach (var b in Existing)
                if (x.BinOk[s * x.E + b.Existing] && AaOk(b, s) && Fits(b, s)) { PlaceItem(b, i); break; }
        }
    }

    private List<int> ItemsByCpuThenMemory()
    {
        var items = new List<int>();
        for (int i = 0; i < x.N; i++) if (!done[i]) items.Add(i);
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
    public List<int> RemainingItemsByCpuThenMemory()
    {
        var items = ItemsByCpuThenMemory();
        foreach (int i in items) if (!x.AnyType[x.ShapeOf[i]]) MarkUnplaced(i);
        items.RemoveAll(i => !x.AnyType[x.ShapeOf[i]]);
        return items;
    }

    /// <summary>
    /// Bin by bin, like FFD but cost-aware: the next bin takes the largest remaining shape (by dual value) and
    /// then, first fit, whatever else of the remaining shapes fits, scanning a bounded stretch from the largest
    /// and another from the smallest. Its type is the one whose fill absorbs the most dual value per dollar;
    /// that choice is re-examined whenever the largest remaining shape changes much, not for every bin.
    /// </summary>
    public void Greedy(PackingOptions o)
    {
        var order = new List<int>();
        for (int s = 0; s < x.S; s++)
        {
            if (rem[s] == 0) continue;
            if (!x.AnyType[s]) MarkShapeUnplaced(s, x.UnplaceableReason(s)!);
            else order.Add(s);
        }
        SortShapes(order);
        if (order.Count == 0) return;
        if (!ColumnGreedy(order, o)) ScanGreedy(order, o);
    }

    /// <summary>The fallback when shapes vary in too many dimensions for <see cref="ColumnGreedy"/>.</summary>
    private void ScanGreedy(List<int> order, PackingOptions o)
    {
        int L = order.Count;
        var sufMin = new long[(L + 1) * D];
        for (int r = 0; r < D; r++) sufMin[L * D + r] = long.MaxValue;
        for (int pos = L - 1; pos >= 0; pos--)
            for (int r = 0; r < D; r++) sufMin[pos * D + r] = Math.Min(sufMin[(pos + 1) * D + r], x.SDem[order[pos] * D + r]);
        // A doubly linked list of the positions still holding items, so that exhausted shapes cost nothing.
        var nxt = new int[L + 1];
        var prv = new int[L + 1];
        for (int i = 0; i < L; i++) { nxt[i] = i + 1; prv[i] = i - 1; }
        int head = 0, tail = L - 1;
        void Unlink(int pos)
        {
            if (prv[pos] >= 0) nxt[prv[pos]] = nxt[pos]; else head = nxt[pos];
            if (nxt[pos] < L) prv[nxt[pos]] = prv[pos]; else tail = prv[pos];
        }
        var used = new long[D];
        var groups = new List<int>();
        var take = new List<(int Pos, long K)>();
        int scanLimit = Math.Max(16, o.ScanLimit);

        // Fills a fresh bin of type t (dry run or for real) and returns the dual value it absorbs.
        double Fill(int t, bool commit)
        {
            Array.Clear(used);
            groups.Clear();
            take.Clear();
            double worth = 0;
            int lastFront = -1;
            bool Try(int pos)
            {
                int s = order[pos];
                for (int r = 0; r < D; r++) if (x.Cap[t * D + r] - used[r] < sufMin[pos * D + r]) return false;
                if (!x.TypeOk[s * x.T + t]) return true;
                long k = Math.Min(rem[s], x.Copies(s, used, x.Cap, t));
                if (k <= 0) return true;
                if (x.SAa[s] >= 0)
                {
                    if (groups.Contains(x.SAa[s])) return true;
                    groups.Add(x.SAa[s]);
                    k = 1;
                }
                x.Add(used, s, k);
                worth += k * dual.Value[s];
                take.Add((pos, k));
                return true;
            }
            int scanned = 0;
            for (int pos = head; pos < L && scanned < scanLimit; pos = nxt[pos], scanned++)
            {
                lastFront = pos;
                if (!Try(pos)) { lastFront = L; break; }
            }
            if (lastFront < L)
            {
                scanned = 0;
                for (int pos = tail; pos > lastFront && pos >= 0 && scanned < scanLimit; pos = prv[pos], scanned++) Try(pos);
            }
            if (commit && take.Count > 0)
            {
                var bin = OpenBin(t);
                foreach (var (pos, k) in take)
                {
                    int s = order[pos];
                    PlaceCopies(bin, s, k);
                    if (rem[s] == 0) Unlink(pos);
                }
            }
            return worth;
        }

        int chosen = -1;
        double chosenAtValue = 0, chosenScore = 0;
        int sinceChoice = 0;
        while (head < L)
        {
            int s = order[head];
            if (rem[s] == 0) { Unlink(head); continue; }
            bool reconsider = chosen < 0 || sinceChoice >= 32 || dual.Value[s] < 0.9 * chosenAtValue
                || !x.TypeOk[s * x.T + chosen] || TypeCount[chosen] >= x.MaxCount[chosen];
            if (reconsider)
            {
                chosen = -1;
                chosenScore = double.NegativeInfinity;
                foreach (int t in x.TypesByPrice)
                {
                    if (!x.TypeOk[s * x.T + t] || TypeCount[t] >= x.MaxCount[t]) continue;
                    double score = Fill(t, commit: false) / Math.Max(x.Price[t], 1e-12);
                    // Cheapest first, and a dearer type must be clearly better: at the LP optimum many types
                    // tie on dual value, and smaller bins waste less at the end.
                    if (score > chosenScore * 1.01 || chosen < 0) { chosenScore = score; chosen = t; }
                }
                chosenAtValue = dual.Value[s];
                sinceChoice = 0;
                if (chosen < 0) { MarkShapeUnplaced(s, MaxCountReason(s)); Unlink(head); continue; }
            }
            Fill(chosen, commit: true);
            sinceChoice++;
        }
    }

    private const int MaxColumns = 96;

    /// <summary>
    /// Bin by bin, with work that does not grow with the number of distinct shapes: shapes that agree in every
    /// dimension but one (cpu or memory, whichever varies more) and in constraint and anti-affinity group form a
    /// column sorted by that dimension, so the largest shape of a column that fits a residual is a binary search
    /// (exhausted shapes are skipped by a union-find). A bin is filled one item at a time with the candidate of
    /// largest dot product with the normalised residual (bin-centric "DotProduct", Panigrahy et al. 2011); its type
    /// is the one whose dry-run fill absorbs the largest share of the demand per dollar, re-examined every few bins and
    /// whenever the largest remaining shape changes much. With <see cref="PackingOptions.BalancedFill"/> a bin instead
    /// keeps its fill on the line to its own full corner, so it ends full in cpu and memory together. Returns false
    /// (doing nothing) when there are too many columns.
    /// </summary>
    private bool ColumnGreedy(List<int> order, PackingOptions o)
    {
        int L = order.Count, T = x.T;
        // The sorted dimension: cpu or memory, whichever has more distinct values.
        var distinct0 = new HashSet<long>();
        foreach (int s in order) distinct0.Add(x.SDem[s * D]);
        // Memory usually varies more: count its values only until they reach cpu's.
        var distinct1 = new HashSet<long>();
        foreach (int s in order) if (distinct1.Add(x.SDem[s * D + 1]) && distinct1.Count >= distinct0.Count) break;
        int sd = distinct1.Count >= distinct0.Count ? 1 : 0;
        var colIndex = new Dictionary<(int, int, long, long, long), int>();
        var members = new List<List<int>>();
        // Shapes in id order: ids follow (constraint, group, gpu, pods, cpu, memory), so a column sorted by memory
        // comes out sorted.
        var inOrder = new bool[x.S];
        foreach (int s in order) inOrder[s] = true;
        for (int s = 0; s < x.S; s++)
        {
            if (!inOrder[s]) continue;
            var key = (x.SCon[s], x.SAa[s], x.SDem[s * D + (1 - sd)], x.SDem[s * D + 2], x.SDem[s * D + 3]);
            if (!colIndex.TryGetValue(key, out int k))
            {
                if (members.Count == MaxColumns) return false;
                k = members.Count; colIndex[key] = k; members.Add([]);
            }
            members[k].Add(s);
        }
        int K = members.Count;
        var colStart = new int[K + 1];
        var colShape = new int[L];
        var colKey = new long[L];
        var colDem = new long[K * D];
        var colAa = new int[K];
        var colType = new bool[K * T];
        for (int k = 0, pos = 0; k < K; k++)
        {
            colStart[k] = pos;
            var m = members[k];
            bool sorted = true;
            for (int j = 1; j < m.Count && sorted; j++) sorted = x.SDem[m[j - 1] * D + sd] < x.SDem[m[j] * D + sd];
            if (!sorted) m.Sort((a, b) => { int c = x.SDem[a * D + sd].CompareTo(x.SDem[b * D + sd]); return c != 0 ? c : a.CompareTo(b); });
            foreach (int s in m)
            {
                colShape[pos] = s; colKey[pos] = x.SDem[s * D + sd]; pos++;
                for (int t = 0; t < T; t++) colType[k * T + t] |= x.TypeOk[s * T + t];
            }
            for (int r = 0; r < D; r++) colDem[k * D + r] = x.SDem[m[0] * D + r];
            colDem[k * D + sd] = x.SDem[m[0] * D + sd];   // the smallest of the column
            colAa[k] = x.SAa[m[0]];
        }
        colStart[K] = L;
        // Per column about one bucket per 8 shapes over its key range; bucketPos[b] = first position with key ≥ min + b·width.
        var bucketBase = new int[K];
        var bucketWidth = new long[K];
        int totalBuckets = 0;
        for (int k = 0; k < K; k++) { bucketBase[k] = totalBuckets; totalBuckets += Math.Max(1, (colStart[k + 1] - colStart[k]) / 8) + 1; }
        var bucketPos = new int[totalBuckets];
        for (int k = 0; k < K; k++)
        {
            int start = colStart[k], end = colStart[k + 1], nb = Math.Max(1, (end - start) / 8);
            long min = colKey[start], span = colKey[end - 1] - min;
            long width = bucketWidth[k] = span / nb + 1;
            for (int b = 0, p = start; b <= nb; b++)
            {
                long from = min + b * width;
                while (p < end && colKey[p] < from) p++;
                bucketPos[bucketBase[k] + b] = p;
            }
        }
        var colOfPos = new int[L];
        for (int k = 0; k < K; k++) for (int p = colStart[k]; p < colStart[k + 1]; p++) colOfPos[p] = k;
        // parent[p]: the nearest position ≤ p of the same column whose shape still has items, or -1.
        var parent = new int[L];
        for (int p = 0; p < L; p++) parent[p] = p;
        // parentUp[p]: the same looking up, the nearest position ≥ p.
        var parentUp = new int[L];
        for (int p = 0; p < L; p++) parentUp[p] = p;
        int FindUp(int p)
        {
            int root = p;
            while (root >= 0 && parentUp[root] != root) root = parentUp[root];
            while (p >= 0 && parentUp[p] != p) { int nx = parentUp[p]; parentUp[p] = root; p = nx; }
            return root;
        }
        int Find(int p)
        {
            int root = p;
            while (root >= 0 && parent[root] != root) root = parent[root];
            while (p >= 0 && parent[p] != p) { int nx = parent[p]; parent[p] = root; p = nx; }
            return root;
        }
        void Exhaust(int p)
        {
            parent[p] = p > colStart[colOfPos[p]] ? p - 1 : -1;
            parentUp[p] = p + 1 < colStart[colOfPos[p] + 1] ? p + 1 : -1;
        }
        var posOf = new int[x.S];
        for (int p = 0; p < L; p++) posOf[colShape[p]] = p;
        // What the searches below read lives by position, next to the keys, not by shape (shape ids follow the input
        // order, so reading rem[shape] in a search was a cache miss per candidate: most of the fill's time at 100k).
        // avail[p] = items of the shape at p not yet placed nor taken by the bin being filled.
        var avail = new int[L];
        for (int p = 0; p < L; p++) avail[p] = rem[colShape[p]];
        // colAll[k, t]: every shape of column k small enough for t in the sorted dimension may go to t, so the
        // searches need not ask per shape (shapes agree in every other dimension and in constraint).
        var colAll = (bool[])colType.Clone();
        for (int k = 0; k < K; k++)
            for (int p = colStart[k]; p < colStart[k + 1]; p++)
            {
                int s = colShape[p];
                for (int t = 0; t < T; t++)
                    if (!x.TypeOk[s * T + t] && colKey[p] <= x.Cap[t * D + sd]) colAll[k * T + t] = false;
            }

        // Types no other type beats: another at most as dear, at least as large everywhere, taking every shape it takes.
        var useful = new List<int>();
        foreach (int t in x.TypesByPrice)
        {
            bool dominated = false;
            foreach (int u in useful)
            {
                if (x.Price[u] > x.Price[t]) continue;
                bool larger = true;
                for (int r = 0; r < D && larger; r++) larger = x.Cap[u * D + r] >= x.Cap[t * D + r];
                if (!larger) continue;
                bool takes = true;
                foreach (int s in order) if (x.TypeOk[s * T + t] && !x.TypeOk[s * T + u]) { takes = false; break; }
                if (takes) { dominated = true; break; }
            }
            if (!dominated) useful.Add(t);
        }
        var usefulArr = useful.ToArray();

        var tmp = new int[x.S];
        var touched = new List<int>();
        var groups = new List<int>();
        var res = new long[D];
        var inv = new double[D];
        // The largest shape of column k still available (beyond what this bin holds) that fits `room` on type t, or -1.
        bool ColumnFits(int k, long[] room)
        {
            for (int r = 0; r < D; r++) if (colDem[k * D + r] > room[r]) return false;
            return colAa[k] < 0 || !groups.Contains(colAa[k]);
        }
        // The first position of column k with a key above limit: a bucket of the column's key range, then a binary
        // search inside it (a search over the whole column was most of the fill's time at 100k shapes).
        int Upper(int k, long limit)
        {
            int start = colStart[k], end = colStart[k + 1];
            long min = colKey[start];
            if (limit < min) return start;
            if (limit >= colKey[end - 1]) return end;
            long b = (limit - min) / bucketWidth[k];
            int lo = bucketPos[bucketBase[k] + (int)b], hi = bucketPos[bucketBase[k] + (int)b + 1];
            while (lo < hi) { int mid = (lo + hi) >>> 1; if (colKey[mid] <= limit) lo = mid + 1; else hi = mid; }
            return lo;
        }
        int Largest(int k, int t, long[] room, long limit) => ColumnFits(k, room) ? LargestBelow(k, t, Upper(k, limit)) : -1;
        // The largest available shape of column k before position `upper` that t takes, or -1.
        int LargestBelow(int k, int t, int upper)
        {
            int p = upper - 1;
            p = p >= colStart[k] ? Find(p) : -1;
            bool all = colAll[k * T + t];
            while (p >= 0 && (avail[p] <= 0 || (!all && !x.TypeOk[colShape[p] * T + t])))
                p = p > colStart[k] ? Find(p - 1) : -1;
            return p;
        }
        // The smallest shape of column k still available with a key ≥ from that fits `room` on type t, or -1 (column checks done).
        // The same from position `lo` up (the first position above some key), with a key that fits `room`.
        int SmallestFrom(int k, int t, long[] room, int lo)
        {
            int p = lo < colStart[k + 1] ? FindUp(lo) : -1;
            bool all = colAll[k * T + t];
            while (p >= 0 && colKey[p] <= room[sd] && (avail[p] <= 0 || (!all && !x.TypeOk[colShape[p] * T + t])))
                p = p + 1 < colStart[k + 1] ? FindUp(p + 1) : -1;
            return p >= 0 && colKey[p] <= room[sd] ? p : -1;
        }
        // Fills a fresh bin of type t (a dry run, or for real: then placed at the end) and returns the share of the demand it absorbs.
        double Fill(int t, bool commit, int first)
        {
            for (int r = 0; r < D; r++) { res[r] = x.Cap[t * D + r]; inv[r] = res[r] > 0 ? 1.0 / ((double)res[r] * res[r]) : 0; }
            groups.Clear();
            double worth = 0;
            Take(colShape[posOf[first]]);
            FillUp();
            if (commit)
            {
                var bin = OpenBin(t);
                foreach (int s in touched)
                {
                    for (int c = 0; c < tmp[s]; c++) PlaceItem(bin, TakeItem(s));
                    if (rem[s] == 0) Exhaust(posOf[s]);
                }
            }
            foreach (int s in touched)
            {
                if (!commit) avail[posOf[s]] += tmp[s];
                tmp[s] = 0;
            }
            touched.Clear();
            return worth;

            void FillUp()
            {
                while (true)
                {
                    int bestPos = -1;
                    double bestScore = double.NegativeInfinity;
                    int od = 1 - sd;
                    double gs = res[sd], go = res[od];
                    double cs = x.Cap[t * D + sd], co = x.Cap[t * D + od];
                    double ns = gs / cs, no = go / co, norm = Math.Sqrt(ns * ns + no * no);
                    if (norm > 0) { ns /= norm; no /= norm; }
                    for (int k = 0; k < K; k++)
                    {
                        if (!colType[k * T + t] || !ColumnFits(k, res)) continue;
                        if (!o.BalancedFill || norm == 0)
                        {
                            int p = Largest(k, t, res, res[sd]);
                            if (p < 0) continue;
                            int s = colShape[p];
                            // Dot product of the demand with the residual, both as shares of the capacity. Measured against
                            // the dual value (largest first) and the plain normalised size: those left 8–10 % above the bound.
                            double score = 0;
                            for (int r = 0; r < D; r++) score += x.SDem[s * D + r] * (double)res[r] * inv[r];
                            if (score > bestScore) { bestScore = score; bestPos = p; }
                            continue;
                        }
                        // Balanced: of each column, the two shapes nearest the key that keeps the bin's fill on the
                        // line to the target (d_o · g_s / g_o), scored by their length along that line less half their
                        // distance from it, as shares of the capacity (the largest-that-fits rule above filled memory
                        // first and left the last bins short of it: 5.8-8 % above the bound at 10k pods). The line
                        // leads to the bin's own full corner: aiming instead at the ratio of the demand its type is
                        // cheapest for by the dual left a cheap compute class memory-full with a quarter of its cpu idle
                        // and a cheap memory class the other way round (real iad prices).
                        double dO = colDem[k * D + od];
                        long ideal = go <= 0 || dO <= 0 ? res[sd] : (long)Math.Min(res[sd], dO * gs / go);
                        int upper = Upper(k, ideal);
                        int below = LargestBelow(k, t, upper);
                        Consider(below, dO);
                        if (below < 0 || colKey[below] != ideal) Consider(SmallestFrom(k, t, res, upper), dO);
                    }
                    void Consider(int p, double dO)
                    {
                        if (p < 0) return;
                        double a = colKey[p] / cs, b = dO / co;
                        double along = a * ns + b * no;
                        double px = a - along * ns, py = b - along * no;
                        double score = along - 0.5 * Math.Sqrt(px * px + py * py);
                        if (score > bestScore) { bestScore = score; bestPos = p; }
                    }
                    if (bestPos < 0) break;
                    Take(colShape[bestPos]);
                }
            }

            void Take(int sb)
            {
                for (int r = 0; r < D; r++) res[r] -= x.SDem[sb * D + r];
                if (x.SAa[sb] >= 0) groups.Add(x.SAa[sb]);
                // Shares of the total demand, not dual values: the dual is often degenerate (on the real iad prices it
                // priced the cheap compute class by memory alone and the cheap memory class by cpu alone), and a fill
                // that left a bin's cpu idle then scored as well as a full one (6.5 % above the bound, now 5.2-5.4 %).
                worth += SizeOf(sb);
                avail[posOf[sb]]--;
                if (tmp[sb]++ == 0) touched.Add(sb);
            }
        }

        int head = 0, chosen = -1, sinceChoice = 0;
        double chosenAtValue = 0;
        while (true)
        {
            while (head < L && rem[order[head]] == 0) head++;
            if (head >= L) break;
            int s = order[head];
            bool reconsider = chosen < 0 || sinceChoice >= 48 || dual.Value[s] < 0.9 * chosenAtValue
                || !x.TypeOk[s * T + chosen] || TypeCount[chosen] >= x.MaxCount[chosen];
            if (reconsider)
            {
                chosen = -1;
                double chosenScore = double.NegativeInfinity;
                foreach (int t in usefulArr)
                {
                    if (!x.TypeOk[s * T + t] || TypeCount[t] >= x.MaxCount[t]) continue;
                    double score = Fill(t, commit: false, s) / Math.Max(x.Price[t], 1e-12);
                    if (score > chosenScore * 1.01 || chosen < 0) { chosenScore = score; chosen = t; }
                }
                if (chosen < 0)
                {
                    // Dominated types may still have room under MaxCount.
                    foreach (int t in x.TypesByPrice)
                        if (x.TypeOk[s * T + t] && TypeCount[t] < x.MaxCount[t]) { chosen = t; break; }
                }
                chosenAtValue = dual.Value[s];
                sinceChoice = 0;
                if (chosen < 0)
                {
                    MarkShapeUnplaced(s, MaxCountReason(s)); avail[posOf[s]] = 0; Exhaust(posOf[s]); continue;
                }
            }
            Fill(chosen, commit: true, s);
            sinceChoice++;
        }
        return true;
    }

    private string MaxCountReason(int s)
    {
        var full = new List<string>();
        for (int t = 0; t < x.T; t++) if (x.TypeOk[s * x.T + t]) full.Add($"{x.P.Types[t].Name} (max {x.MaxCount[t]})");
        return $"every class that may hold it is at its maximum count: {string.Join(", ", full)}";
    }


    private double Efficiency(Bin b) => b.Worth / Math.Max(x.Price[b.Type], 1e-12);

    private List<Bin> LeastEfficient(int k)
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
    private static void SortByKey(double[] keys, int[] idx, int n, int k)
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

    /// <summary>Repeats the improving moves until none applies (at most a few rounds).</summary>
    public void LocalSearch(PackingOptions o)
    {
        for (int round = 0; round < 4; round++)
        {
            bool changed = Downsize();
            changed |= Eliminate(o.LocalSearchBins);
            changed |= Merge(Math.Max(2, o.LocalSearchBins / 4));
            changed |= Downsize();
            if (!changed) break;
        }
        Bins.RemoveAll(b => b.Removed || b.Items.Count == 0);
    }

    /// <summary>The cheap part of the local search: each bin becomes the cheapest type that holds it.</summary>
    public void DownsizeOnly()
    {
        Downsize();
        Bins.RemoveAll(b => b.Removed || b.Items.Count == 0);
    }

    private bool AllAllowed(Bin b, int t)
    {
        foreach (int i in b.Items) if (!x.TypeOk[x.ShapeOf[i] * x.T + t]) return false;
        return true;
    }

    /// <summary>Each bin becomes the cheapest type that still holds what it holds.</summary>
    private bool Downsize()
    {
        bool changed = false;
        foreach (var b in Bins)
        {
            if (b.Removed) continue;
            if (b.Items.Count == 0) { b.Removed = true; TypeCount[b.Type]--; changed = true; continue; }
            foreach (int t in x.TypesByPrice)
            {
                if (x.Price[t] >= x.Price[b.Type]) break;
                if (TypeCount[t] >= x.MaxCount[t] || !x.FitsAmount(b.Used, t) || !AllAllowed(b, t)) continue;
                TypeCount[b.Type]--; TypeCount[t]++; b.Type = t; changed = true;
                break;
            }
        }
        return changed;
    }

    /// <summary>Empties the least efficient bins into the others' spare room where every item finds a place.</summary>
    private bool Eliminate(int k)
    {
        bool changed = false;
        var moves = new List<(int Item, Bin To)>();
        // Destinations: the least efficient bins (they have the most room), not all bins, so the work is bounded.
        var targets = LeastEfficient(4 * k);
        foreach (var victim in targets.Take(k).ToList())
        {
            if (victim.Removed) continue;
            var items = victim.Items.ToList();
            items.Sort((a, b) => { int c = dual.Value[x.ShapeOf[b]].CompareTo(dual.Value[x.ShapeOf[a]]); return c != 0 ? c : a.CompareTo(b); });
            moves.Clear();
            bool ok = true;
            foreach (int i in items)
            {
                int s = x.ShapeOf[i];
                Bin? best = null;
                double bestWaste = double.PositiveInfinity;
                foreach (var b in Existing)
                    if (Allows(b, s) && AaOk(b, s) && Fits(b, s)) { double w = WasteAfter(b, s, 1); if (w < bestWaste) { bestWaste = w; best = b; } }
                foreach (var b in targets)
                {
                    if (b.Removed || ReferenceEquals(b, victim) || !Allows(b, s) || !Fits(b, s) || !AaOk(b, s)) continue;
                    double w = WasteAfter(b, s, 1);
                    if (w < bestWaste) { bestWaste = w; best = b; }
                }
                if (best is null) { ok = false; break; }
                RemoveItem(victim, i);
                PlaceItem(best, i);
                moves.Add((i, best));
            }
            if (ok)
            {
                victim.Removed = true;
                TypeCount[victim.Type]--;
                changed = true;
            }
            else
            {
                for (int m = moves.Count - 1; m >= 0; m--) { RemoveItem(moves[m].To, moves[m].Item); PlaceItem(victim, moves[m].Item); }
            }
        }
        return changed;
    }

    /// <summary>Two bins become one of a type cheaper than both together.</summary>
    private bool Merge(int k)
    {
        bool changed = false;
        var cand = LeastEfficient(k);
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
                    int count = TypeCount[t] - (a.Type == t ? 1 : 0) - (b.Type == t ? 1 : 0);
                    if (count >= x.MaxCount[t] || !x.FitsAmount(used, t) || !AllAllowed(a, t) || !AllAllowed(b, t)) continue;
                    foreach (int item in b.Items.ToList()) { RemoveItem(b, item); PlaceItem(a, item); }
                    b.Removed = true;
                    TypeCount[b.Type]--;
                    TypeCount[a.Type]--;
                    TypeCount[t]++;
                    a.Type = t;
                    changed = true;
                    break;
                }
            }
        }
        return changed;
    }

    /// <summary>How much of a bin of type t an item of shape s takes: its shares of cpu, memory and GPU, summed.</summary>
    private double Volume(int s, int t)
    {
        double v = 0;
        for (int r = 0; r < 3; r++) if (x.Cap[t * D + r] > 0) v += (double)x.SDem[s * D + r] / x.Cap[t * D + r];
        return v;
    }

    private double Fullness(Bin b)
    {
        double v = 0;
        for (int r = 0; r < 3; r++) if (x.Cap[b.Type * D + r] > 0) v += (double)b.Used[r] / x.Cap[b.Type * D + r];
        return v;
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

    private readonly List<(int Item, Bin? From, Bin? To)> journal = [];
    private int[] heldShape = new int[16];
    private double[] heldVol = new double[16];

    private void Move(int i, Bin? from, Bin? to)
    {
        if (from is not null) RemoveItem(from, i);
        if (to is not null) PlaceItem(to, i);
        journal.Add((i, from, to));
    }

    /// <summary>
    /// Ruin and repair on the new bins, after Levine and Ducatelle's local search for bin packing (2004): the
    /// least efficient bins are emptied into a pool; every other bin then trades items with the pool where that
    /// makes it fuller (one pool item in for nothing, one or two of its own); the pool, now of smaller items, goes
    /// into spare room first fit and what is left into fresh bins. A round is kept only when it lowers the cost,
    /// so the phase never makes a packing worse. Work is bounded by a count of fit tests, not by time.
    /// </summary>
    public void Improve(PackingOptions o)
    {
        long work = o.ImproveWork;
        var tried = new List<Bin>();
        var pool = new List<int>();
        var opened = new List<Bin>();
        // The working set, where the room is: the least efficient bins by the dual and the least full (shares of cpu,
        // memory and GPU summed); the rest stay as they are, so that a round costs the same at any size. On the real iad
        // prices the two $0.001 classes are the most efficient by the dual yet hold most of the idle room (the compute
        // class memory-full with a quarter of its cpu idle): with the least efficient alone the phase gained nothing at
        // 10k pods (5.24 % above the bound), with the least full alone it lost at 3k pods of the test's iad mix (3.5 → 4.3 %).
        var all = new List<Bin>();
        foreach (var b in Bins) { b.Tried = false; if (!b.Removed && b.Items.Count > 0) all.Add(b); }
        var eff = new double[all.Count];
        var full = new double[all.Count];
        var order = new int[all.Count];
        for (int j = 0; j < all.Count; j++) full[j] = Fullness(all[j]);
        SortByKey(full, order, all.Count, o.ImproveBins);
        var live = LeastEfficient(o.ImproveBins / 2);
        foreach (var b in live) b.Tried = true;
        for (int j = 0; j < all.Count && live.Count < o.ImproveBins; j++) if (!all[order[j]].Tried) live.Add(all[order[j]]);
        foreach (var b in live) b.Tried = false;
        // Rounds since the cost last fell: where many in a row gain nothing, the rest rarely do either.
        int idle = 0;
        var victims = new List<Bin>();
        while (work > 0 && idle++ < o.ImproveIdleRounds)
        {
            live.RemoveAll(b => b.Removed || b.Items.Count == 0);
            if (live.Count < 2) return;
            // The least efficient bins not yet tried, then the least full of the others.
            int n = live.Count;
            if (eff.Length < n) { eff = new double[2 * n]; full = new double[2 * n]; order = new int[2 * n]; }
            victims.Clear();
            for (int j = 0; j < n; j++) { eff[j] = Efficiency(live[j]); full[j] = Fullness(live[j]); }
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
            if (victims.Count == 0) return;
            // Only the victims, the partners and the bins a round opens change: cost and spread are summed over those.
            SortByKey(full, order, n, o.ImprovePartners);
            var partners = new List<Bin>(o.ImprovePartners);
            for (int j = 0; j < n && partners.Count < o.ImprovePartners; j++) if (!victims.Contains(live[order[j]])) partners.Add(live[order[j]]);
            double before = 0, spreadBefore = 0;
            foreach (var b in victims.Concat(partners)) { before += x.Price[b.Type]; spreadBefore += Fullness(b) * Fullness(b); }

            journal.Clear();
            pool.Clear();
            opened.Clear();
            foreach (var v in victims)
            {
                foreach (int i in v.Items.ToList()) { Move(i, v, null); pool.Add(i); }
                v.Removed = true;
                TypeCount[v.Type]--;
            }
            // Trades, bin by bin, the least full first (they have the room). Volumes on the partner's type are worked
            // out once per step (not once per pool item and pair), NaN where the type does not take the pool item.
            foreach (var b in partners)
            {
                if (work <= 0 || pool.Count == 0) break;
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
                    for (int a = 0; a < h; a++) { heldShape[a] = x.ShapeOf[held[a]]; heldVol[a] = Volume(heldShape[a], t); minOut = Math.Min(minOut, heldVol[a]); }
                    foreach (int f in pool)
                    {
                        int sf = x.ShapeOf[f];
                        if (!x.TypeOk[sf * x.T + t]) continue;
                        double vf = Volume(sf, t);
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
            // What is left of the pool: spare room first, largest first, where it fits tightest.
            pool.Sort((a, b) => { int c = SizeOf(x.ShapeOf[b]).CompareTo(SizeOf(x.ShapeOf[a])); return c != 0 ? c : a.CompareTo(b); });
            var still = new List<int>();
            foreach (int i in pool)
            {
                int s = x.ShapeOf[i];
                Bin? best = null;
                double bestWaste = double.PositiveInfinity;
                work -= partners.Count;
                foreach (var b in partners)
                {
                    if (!Allows(b, s) || !AaOk(b, s) || !Fits(b, s)) continue;
                    double w = WasteAfter(b, s, 1);
                    if (w < bestWaste) { bestWaste = w; best = b; }
                }
                if (best is null) still.Add(i); else Move(i, null, best);
            }
            // Then fresh bins: the type whose first-fit fill of the rest absorbs the most dual value per dollar.
            bool stuck = false;
            while (still.Count > 0 && !stuck)
            {
                int bestType = -1;
                double bestScore = double.NegativeInfinity;
                var bestTake = new List<int>();
                var take = new List<int>();
                var used = new long[D];
                var groups = new List<int>();
                foreach (int t in x.TypesByPrice)
                {
                    if (TypeCount[t] >= x.MaxCount[t]) continue;
                    Array.Clear(used); take.Clear(); groups.Clear();
                    double worth = 0;
                    foreach (int i in still)
                    {
                        int s = x.ShapeOf[i];
                        if (!x.TypeOk[s * x.T + t] || !x.FitsOnType(s, used, t)) continue;
                        if (x.SAa[s] >= 0) { if (groups.Contains(x.SAa[s])) continue; groups.Add(x.SAa[s]); }
                        x.Add(used, s, 1);
                        take.Add(i);
                        worth += dual.Value[s];
                    }
                    work -= still.Count;
                    if (take.Count == 0) continue;
                    double score = worth / Math.Max(x.Price[t], 1e-12);
                    if (score > bestScore * 1.01 || bestType < 0) { bestScore = score; bestType = t; bestTake.Clear(); bestTake.AddRange(take); }
                }
                if (bestType < 0) { stuck = true; break; }
                var nb = OpenBin(bestType);
                opened.Add(nb);
                foreach (int i in bestTake) Move(i, null, nb);
                var set = new HashSet<int>(bestTake);
                still.RemoveAll(set.Contains);
            }
            foreach (var nb in opened)
                foreach (int t in x.TypesByPrice)
                {
                    if (x.Price[t] >= x.Price[nb.Type]) break;
                    if (TypeCount[t] >= x.MaxCount[t] || !x.FitsAmount(nb.Used, t) || !AllAllowed(nb, t)) continue;
                    TypeCount[nb.Type]--; TypeCount[t]++; nb.Type = t;
                    break;
                }
            double after = 0, spreadAfter = 0;
            foreach (var b in partners.Concat(opened)) if (b.Items.Count > 0) { after += x.Price[b.Type]; spreadAfter += Fullness(b) * Fullness(b); }
            // Equal cost with fuller bins (a larger sum of squared fullness) is progress too: the room gathers in
            // fewer bins, which later rounds empty.
            if (!stuck && (after < before - 1e-9 || (after < before + 1e-9 && spreadAfter > spreadBefore * (1 + 1e-9))))
            {
                bool gained = after < before - 1e-9;
                foreach (var b in partners) if (b.Items.Count == 0) { b.Removed = true; TypeCount[b.Type]--; }
                if (gained) { foreach (var b in tried) b.Tried = false; tried.Clear(); idle = 0; }
                live.AddRange(opened);
                continue;
            }
            // Undo: moves in reverse, then the bins this round opened and removed.
            for (int m = journal.Count - 1; m >= 0; m--)
            {
                var (i, from, to) = journal[m];
                if (to is not null) RemoveItem(to, i);
                if (from is not null) PlaceItem(from, i);
            }
            journal.Clear();
            foreach (var nb in opened) { nb.Removed = true; TypeCount[nb.Type]--; }
            foreach (var v in victims) { v.Removed = false; TypeCount[v.Type]++; }
        }
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

/// <summary>
/// Depth-first branch and bound for small problems: items in decreasing dual value go to an existing node,
/// an open bin, or a new bin of each type. The bound is the dual value still to place minus what the open
/// bins' idle capacity can absorb at their own dual prices (a valid bound for the same reason as the root's).
/// Identical items take bins in increasing order and equal open bins are tried once.
/// </summary>
internal static class Search
{
    private const int D = Instance.D;

    public static PackingSolution? Run(Instance x, DualBound dual, PackingSolution incumbent, long nodeBudget)
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
        int n = items.Count, E = x.E, maxBins = E + n;
        var groupBit = new Dictionary<int, int>();
        foreach (int i in items) { int g = x.SAa[x.ShapeOf[i]]; if (g >= 0 && !groupBit.ContainsKey(g)) groupBit[g] = groupBit.Count; }
        if (groupBit.Count > 64) return null;
        var suf = new double[n + 1];
        for (int k = n - 1; k >= 0; k--) suf[k] = suf[k + 1] + dual.Value[x.ShapeOf[items[k]]];

        var binType = new int[maxBins];
        var used = new long[maxBins * D];
        var mask = new ulong[maxBins];
        var binOf = new int[n];
        var bestBinOf = new int[n];
        var bestTypes = new List<int>();
        int nb = E;
        for (int e = 0; e < E; e++) binType[e] = -1;
        double idleWorth = 0;   // dual worth of the idle capacity of existing and open bins
        for (int e = 0; e < E; e++) for (int r = 0; r < D; r++) idleWorth += Math.Max(0, x.Free[e * D + r]) * dual.WMax[r];
        bool complete = incumbent.Unplaced.Count == 0;
        double bestCost = complete ? (double)incumbent.Cost : double.PositiveInfinity;
        bool found = false, aborted = false;
        long nodes = 0;
        var typeCount = new int[x.T];
        var cand = new int[n + 1][];
        var candKey = new double[n + 1][];
        for (int k = 0; k <= n; k++) { cand[k] = new int[maxBins]; candKey[k] = new double[maxBins]; }

        long Cap(int b, int r) => binType[b] >= 0 ? x.Cap[binType[b] * D + r] : x.Free[b * D + r];
        double W(int b, int r) => binType[b] >= 0 ? dual.W[binType[b] * D + r] : dual.WMax[r];
        bool Fits(int b, int s)
        {
            for (int r = 0; r < D; r++) if (used[b * D + r] + x.SDem[s * D + r] > Cap(b, r)) return false;
            return true;
        }
        void Place(int b, int s, int sign)
        {
            for (int r = 0; r < D; r++) { used[b * D + r] += sign * x.SDem[s * D + r]; idleWorth -= sign * x.SDem[s * D + r] * W(b, r); }
            if (x.SAa[s] >= 0) mask[b] ^= 1UL << groupBit[x.SAa[s]];
        }
        bool Same(int a, int b)
        {
            if (binType[a] != binType[b] || binType[a] < 0 || mask[a] != mask[b]) return false;
            for (int r = 0; r < D; r++) if (used[a * D + r] != used[b * D + r]) return false;
            return true;
        }

        void Dfs(int k, double cost)
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
            int i = items[k], s = x.ShapeOf[i];
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

        Dfs(0, 0);
        if (!found)
            return aborted ? null : incumbent with { Strategy = incumbent.Strategy + " (proven optimal by branch and bound)", ProvenOptimal = complete };
        var st = new State(x, dual);
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
}
