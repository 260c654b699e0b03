namespace Karpetrack;

/// <summary>
/// The problem flattened into arrays, with identical items (same demand, constraint and anti-affinity group)
/// grouped into shapes so that work scales with distinct shapes, not pods.
/// </summary>
internal sealed class PackingInstance
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
    /// <summary>
    /// Per shape: which new bins its constraint class allows, as an id shared by every class that allows the same types
    /// (and the same GPU rule), so two shapes of one row differ in TypeOk only where one fits a type and the other not.
    /// </summary>
    public readonly int[] SRow;
    public readonly int[] TypesByPrice;
    public readonly int PlaceableItems;

    /// <summary>Instances of at most this many items sort their keys in <see cref="keyScratch"/> (48 KB, under the large object heap's threshold).</summary>
    private const int ScratchKeys = 1024;
    [ThreadStatic] private static ItemKey[]? keyScratch;

    public PackingInstance(PackingProblem p) : this(p, null) { }

    /// <summary>
    /// The instance of items given as distinct ones with their numbers: <c>p.Items[i]</c> stands for <c>copies[i]</c> items,
    /// numbered on from the copies before it (item ids are not kept). Shapes, their order, demands, classes and counts are
    /// those of the instance over every copy, so its bounds are the same; for bounds only (<see cref="ClusterCosts"/>'s
    /// outlook over 150,000 pods holds a few thousand items instead of one object per pod), not for packing: P's items are
    /// not the instance's.
    /// </summary>
    internal static PackingInstance Counted(PackingProblem p, int[] copies) => new(p, copies);

    private PackingInstance(PackingProblem p, int[]? copies)
    {
        P = p;
        int K = p.Items.Count;
        if (copies is not null && copies.Length != K) throw new ArgumentException($"{copies.Length} counts for {K} items", nameof(copies));
        long n = K;
        if (copies is not null) { n = 0; foreach (int c in copies) n += c >= 1 ? c : throw new ArgumentException("every item stands for at least one copy", nameof(copies)); }
        N = checked((int)n); T = p.Types.Count; E = p.Existing.Count;
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
        // order cost a cache miss per shape touched).
        ShapeOf = new int[N];
        // The sort's keys live only in this constructor: a small instance (a node's or a group's pods; thousands per scan)
        // sorts in the thread's scratch array instead of a new one.
        var keys = K <= ScratchKeys ? (keyScratch ??= new ItemKey[ScratchKeys]) : new ItemKey[K];
        for (int i = 0; i < K; i++)
        {
            var it = p.Items[i];
            keys[i] = new ItemKey(it.Constraint, it.AntiAffinityGroup < 0 ? -1 : it.AntiAffinityGroup, it.Demand, i);
        }
        Array.Sort(keys, 0, K);
        // Counted: given item i's copies are items first[i] .. first[i] + copies[i] - 1.
        int[]? first = null;
        if (copies is not null)
        {
            first = new int[K];
            for (int i = 1; i < K; i++) first[i] = first[i - 1] + copies[i - 1];
        }
        int shapes = 0;
        for (int j = 0; j < K; j++) if (j == 0 || !keys[j].SameShape(keys[j - 1])) shapes++;
        S = shapes;
        SDem = new long[S * D]; SCon = new int[S]; SAa = new int[S]; SItems = new int[S][];
        for (int j = 0, s = 0; j < K; s++)
        {
            int end = j + 1;
            while (end < K && keys[end].SameShape(keys[j])) end++;
            var k = keys[j];
            Put(SDem, s, k.Demand); SCon[s] = k.Con; SAa[s] = k.Aa;
            int count = 0;
            for (int m = j; m < end; m++) count += copies is null ? 1 : copies[keys[m].Index];
            var members = new int[count];
            count = 0;
            for (int m = j; m < end; m++)
            {
                int i = keys[m].Index;
                if (first is null) { members[count++] = i; ShapeOf[i] = s; continue; }
                for (int c = 0; c < copies![i]; c++) { members[count++] = first[i] + c; ShapeOf[first[i] + c] = s; }
            }
            SItems[s] = members;
            j = end;
        }

        TypeOk = new bool[S * T]; BinOk = new bool[S * E]; AnyType = new bool[S]; AnyBin = new bool[S]; SRow = new int[S];
        PlaceableItems = Compatibility(p);
        TypesByPrice = [.. Enumerable.Range(0, T).OrderBy(t => Price[t]).ThenBy(t => p.Types[t].Id).ThenBy(t => t)];
    }

    /// <summary>
    /// A copy whose GPU dimension counts whole multiples of <paramref name="q"/> millicores instead: ⌊cpu / q⌋ of each
    /// shape, type and existing bin (see <see cref="DualBound.WithFloorCuts"/>). Only for instances where no shape asks
    /// for a GPU; compatibility (TypeOk, BinOk, the GPU rule) is the original's.
    /// </summary>
    internal PackingInstance(PackingInstance x, long q)
    {
        P = x.P; N = x.N; T = x.T; E = x.E; S = x.S;
        Price = x.Price; MaxCount = x.MaxCount; ShapeOf = x.ShapeOf; SCon = x.SCon; SAa = x.SAa; SItems = x.SItems;
        TypeOk = x.TypeOk; BinOk = x.BinOk; AnyType = x.AnyType; AnyBin = x.AnyBin; SRow = x.SRow;
        TypesByPrice = x.TypesByPrice; PlaceableItems = x.PlaceableItems;
        Cap = Floors(x.Cap, q); SDem = Floors(x.SDem, q); Free = Floors(x.Free, q);
    }

    private static long[] Floors(long[] a, long q)
    {
        var b = (long[])a.Clone();
        for (int k = 0; k < b.Length; k += D) b[k + 2] = Math.Max(0, b[k]) / q;
        return b;
    }

    /// <summary>Fills TypeOk, BinOk, AnyType and AnyBin; returns the number of items some bin may take.</summary>
    /// <remarks>
    /// The shapes come sorted by constraint class (see the constructor), so one class's shapes are neighbours: the
    /// class's answers (which types and bins it allows, its row per GPU rule) are asked when the class changes and kept
    /// in arrays reused for the next class, not in dictionaries of one array per class. The answers and the rows'
    /// numbering (by first appearance in shape order) are those of a lookup per class; a scan builds thousands of small
    /// instances, and those dictionaries were about 45 MB of a 5,000-node run's garbage.
    /// </remarks>
    private int Compatibility(PackingProblem p)
    {
        int placeable = 0;
        // Delegates are called once per (constraint class, bin), never per item.
        var ta = new bool[T];
        var ba = new bool[E];
        int con = 0, rowPlain = -1, rowGpu = -1;
        Dictionary<string, int>? rows = null;
        Span<char> key = T + 1 <= 256 ? stackalloc char[T + 1] : new char[T + 1];
        for (int s = 0; s < S; s++)
        {
            if (s == 0 || SCon[s] != con)
            {
                con = SCon[s];
                for (int t = 0; t < T; t++) ta[t] = p.TypeAllows(con, p.Types[t]);
                for (int e = 0; e < E; e++) ba[e] = p.BinAllows(con, p.Existing[e]);
                rowPlain = rowGpu = -1;
            }
            bool nonGpuTypeFits = false;
            for (int t = 0; t < T; t++)
            {
                bool ok = ta[t] && MaxCount[t] > 0 && DemandFits(SDem, s, Cap, t);
                TypeOk[s * T + t] = ok;
                if (ok && Cap[t * D + 2] == 0) nonGpuTypeFits = true;
            }
            // GPU classes are expensive: a pod that needs no GPU goes there only when nothing else takes it.
            bool gpuRule = SDem[s * D + 2] == 0 && nonGpuTypeFits;
            if (gpuRule)
                for (int t = 0; t < T; t++) if (Cap[t * D + 2] > 0) TypeOk[s * T + t] = false;
            ref int row = ref gpuRule ? ref rowGpu : ref rowPlain;
            if (row < 0)
            {
                for (int t = 0; t < T; t++) key[t] = ta[t] && MaxCount[t] > 0 && !(gpuRule && Cap[t * D + 2] > 0) ? '1' : '0';
                key[T] = gpuRule ? 'g' : '-';
                rows ??= new Dictionary<string, int>(StringComparer.Ordinal);
                var lookup = rows.GetAlternateLookup<ReadOnlySpan<char>>();
                if (!lookup.TryGetValue(key, out row)) rows[new string(key)] = row = rows.Count;
            }
            SRow[s] = row;
            for (int t = 0; t < T; t++) AnyType[s] |= TypeOk[s * T + t];
            for (int e = 0; e < E; e++)
            {
                BinOk[s * E + e] = ba[e] && DemandFits(SDem, s, Free, e);
                AnyBin[s] |= BinOk[s * E + e];
            }
            if (AnyType[s] || AnyBin[s]) placeable += SItems[s].Length;
        }
        return placeable;
    }

    // Compared through IComparable rather than an IComparer object: the sort then calls CompareTo directly, not through
    // an interface (that sort was half of building the instance).
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
