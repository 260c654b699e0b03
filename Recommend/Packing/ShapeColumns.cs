namespace Karpetrack;

/// <summary>
/// The remaining shapes as columns for <see cref="ColumnGreedy"/>: shapes that agree in every dimension but one (cpu
/// or memory, whichever varies more) and in constraint class and anti-affinity group form a column sorted by that
/// dimension, so the largest shape of a column that fits a residual is a binary search,
/// and exhausted shapes are skipped by a union-find. Counts of what is still available live by position, next to the
/// keys. Where that makes too many columns, a column holds the shapes whose classes allow the same new bins
/// (<see cref="PackingInstance.SRow"/>), and the shapes of hostname anti-affinity groups share the columns of the others (before, the greedy fell back to <see cref="ScanGreedy"/> there,
/// from about 100 groups on, whose scans cost 0.6-0.8 s at 100k pods); the searches skip a shape whose group the bin
/// being filled already holds.
/// </summary>
internal sealed class ShapeColumns
{
    private const int D = PackingInstance.D;
    public const int MaxColumns = 96;
    private readonly PackingInstance x;
    private readonly int T;
    /// <summary>The sorted dimension: 0 (cpu) or 1 (memory).</summary>
    public readonly int Sd;
    public readonly int K;
    public readonly int[] ColStart;       // K+1: first position of each column
    public readonly int[] ColShape;       // by position: the shape
    public readonly long[] ColKey;        // by position: the shape's demand in the sorted dimension
    public readonly long[] ColDem;        // K×D: the column's demand, its smallest in the sorted dimension
    private readonly int[] aaOfPos;       // by position: the shape's anti-affinity group, or -1
    private readonly int[] groupMark;     // per group: the bin that holds it, when equal to mark
    private int mark = 1;
    public readonly bool[] ColType;       // K×T: some shape of the column may go to the type
    /// <summary>K×T: every shape of the column small enough for the type may go there, so searches need not ask per shape.</summary>
    private readonly bool[] colAll;
    private readonly int[] bucketBase;
    private readonly long[] bucketWidth;
    private readonly int[] bucketPos;     // bucketPos[b] = first position with key ≥ min + b·width
    private readonly int[] colOfPos;
    private readonly int[] parent;        // the nearest position ≤ p of the same column whose shape still has items, or -1
    private readonly int[] parentUp;      // the same looking up: the nearest position ≥ p
    public readonly int[] PosOf;          // by shape
    /// <summary>
    /// Items of the shape at a position not yet placed nor taken by the bin being filled (by position, not shape: shape
    /// ids follow the input order, so reading by shape in a search was a cache miss per candidate).
    /// </summary>
    public readonly int[] Avail;

    private ShapeColumns(PackingInstance x, int sd, List<List<int>> members, int L, Assignment st)
    {
        this.x = x;
        T = x.T;
        Sd = sd;
        K = members.Count;
        ColStart = new int[K + 1];
        ColShape = new int[L];
        ColKey = new long[L];
        ColDem = new long[K * D];
        ColType = new bool[K * T];
        for (int k = 0, pos = 0; k < K; k++)
        {
            ColStart[k] = pos;
            var m = members[k];
            bool sorted = true;
            for (int j = 1; j < m.Count && sorted; j++) sorted = x.SDem[m[j - 1] * D + sd] < x.SDem[m[j] * D + sd];
            if (!sorted) m.Sort((a, b) => { int c = x.SDem[a * D + sd].CompareTo(x.SDem[b * D + sd]); return c != 0 ? c : a.CompareTo(b); });
            foreach (int s in m)
            {
                ColShape[pos] = s; ColKey[pos] = x.SDem[s * D + sd]; pos++;
                for (int t = 0; t < T; t++) ColType[k * T + t] |= x.TypeOk[s * T + t];
            }
            for (int r = 0; r < D; r++) ColDem[k * D + r] = x.SDem[m[0] * D + r];
            ColDem[k * D + sd] = x.SDem[m[0] * D + sd];   // the smallest of the column
        }
        ColStart[K] = L;
        (bucketBase, bucketWidth, bucketPos) = Buckets();
        colOfPos = new int[L];
        for (int k = 0; k < K; k++) for (int p = ColStart[k]; p < ColStart[k + 1]; p++) colOfPos[p] = k;
        parent = new int[L];
        for (int p = 0; p < L; p++) parent[p] = p;
        parentUp = new int[L];
        for (int p = 0; p < L; p++) parentUp[p] = p;
        PosOf = new int[x.S];
        for (int p = 0; p < L; p++) PosOf[ColShape[p]] = p;
        aaOfPos = new int[L];
        int groupCount = 0;
        for (int p = 0; p < L; p++) { aaOfPos[p] = x.SAa[ColShape[p]]; groupCount = Math.Max(groupCount, aaOfPos[p] + 1); }
        groupMark = new int[groupCount];
        Avail = new int[L];
        for (int p = 0; p < L; p++) Avail[p] = st.Remaining(ColShape[p]);
        colAll = (bool[])ColType.Clone();
        for (int k = 0; k < K; k++)
            for (int p = ColStart[k]; p < ColStart[k + 1]; p++)
            {
                int s = ColShape[p];
                for (int t = 0; t < T; t++)
                    if (!x.TypeOk[s * T + t] && ColKey[p] <= x.Cap[t * D + sd]) colAll[k * T + t] = false;
            }
    }

    /// <summary>The columns of the shapes in <paramref name="order"/>, or null when there are more than <see cref="MaxColumns"/>.</summary>
    public static ShapeColumns? Create(Assignment st, List<int> order)
    {
        var x = st.X;
        // The sorted dimension: cpu or memory, whichever has more distinct values.
        var distinct0 = new HashSet<long>();
        foreach (int s in order) distinct0.Add(x.SDem[s * D]);
        // Memory usually varies more: count its values only until they reach cpu's.
        var distinct1 = new HashSet<long>();
        foreach (int s in order) if (distinct1.Add(x.SDem[s * D + 1]) && distinct1.Count >= distinct0.Count) break;
        int sd = distinct1.Count >= distinct0.Count ? 1 : 0;
        // Shapes in id order: ids follow (constraint, group, gpu, pods, cpu, memory), so a column sorted by memory
        // comes out sorted.
        var inOrder = new bool[x.S];
        foreach (int s in order) inOrder[s] = true;
        // A column per constraint class and group where they are few enough (as before groups shared columns: the plans
        // at 1k pods stay what they were, and so do the columns column generation starts from), else per row.
        var members = Columns(x, inOrder, sd, byGroup: true) ?? Columns(x, inOrder, sd, byGroup: false);
        if (members is null) return null;
        return new ShapeColumns(x, sd, members, order.Count, st);
    }

    private static List<List<int>>? Columns(PackingInstance x, bool[] inOrder, int sd, bool byGroup)
    {
        var colIndex = new Dictionary<(int, int, long, long, long), int>();
        var members = new List<List<int>>();
        for (int s = 0; s < x.S; s++)
        {
            if (!inOrder[s]) continue;
            var key = byGroup ? (x.SCon[s], x.SAa[s], x.SDem[s * D + (1 - sd)], x.SDem[s * D + 2], x.SDem[s * D + 3])
                : (-1, x.SRow[s], x.SDem[s * D + (1 - sd)], x.SDem[s * D + 2], x.SDem[s * D + 3]);
            if (!colIndex.TryGetValue(key, out int k))
            {
                if (members.Count == MaxColumns) return null;
                k = members.Count; colIndex[key] = k; members.Add([]);
            }
            members[k].Add(s);
        }
        return members;
    }

    /// <summary>A fresh bin is being filled: no group is held.</summary>
    public void NewBin() => mark++;

    /// <summary>The bin being filled holds a pod of anti-affinity group g (g ≥ 0).</summary>
    public void Hold(int g) => groupMark[g] = mark;

    private bool Held(int p) => aaOfPos[p] >= 0 && groupMark[aaOfPos[p]] == mark;

    /// <summary>Per column about one bucket per 8 shapes over its key range.</summary>
    private (int[] Base, long[] Width, int[] Pos) Buckets()
    {
        var bBase = new int[K];
        var width = new long[K];
        int totalBuckets = 0;
        for (int k = 0; k < K; k++) { bBase[k] = totalBuckets; totalBuckets += Math.Max(1, (ColStart[k + 1] - ColStart[k]) / 8) + 1; }
        var bPos = new int[totalBuckets];
        for (int k = 0; k < K; k++)
        {
            int start = ColStart[k], end = ColStart[k + 1], nb = Math.Max(1, (end - start) / 8);
            long min = ColKey[start], span = ColKey[end - 1] - min;
            long wk = width[k] = span / nb + 1;
            for (int b = 0, p = start; b <= nb; b++)
            {
                long from = min + b * wk;
                while (p < end && ColKey[p] < from) p++;
                bPos[bBase[k] + b] = p;
            }
        }
        return (bBase, width, bPos);
    }

    private int FindUp(int p)
    {
        int root = p;
        while (root >= 0 && parentUp[root] != root) root = parentUp[root];
        while (p >= 0 && parentUp[p] != p) { int nx = parentUp[p]; parentUp[p] = root; p = nx; }
        return root;
    }

    private int Find(int p)
    {
        int root = p;
        while (root >= 0 && parent[root] != root) root = parent[root];
        while (p >= 0 && parent[p] != p) { int nx = parent[p]; parent[p] = root; p = nx; }
        return root;
    }

    /// <summary>The shape at p has no items left: searches skip it from now on.</summary>
    public void Exhaust(int p)
    {
        parent[p] = p > ColStart[colOfPos[p]] ? p - 1 : -1;
        parentUp[p] = p + 1 < ColStart[colOfPos[p] + 1] ? p + 1 : -1;
    }

    /// <summary>
    /// The first position of column k with a key above limit: a bucket of the column's key range, then a binary
    /// search inside it (a search over the whole column was most of the fill's time at 100k shapes).
    /// </summary>
    public int Upper(int k, long limit)
    {
        int start = ColStart[k], end = ColStart[k + 1];
        long min = ColKey[start];
        if (limit < min) return start;
        if (limit >= ColKey[end - 1]) return end;
        long b = (limit - min) / bucketWidth[k];
        int lo = bucketPos[bucketBase[k] + (int)b], hi = bucketPos[bucketBase[k] + (int)b + 1];
        while (lo < hi) { int mid = (lo + hi) >>> 1; if (ColKey[mid] <= limit) lo = mid + 1; else hi = mid; }
        return lo;
    }

    /// <summary>The largest available shape of column k before position <paramref name="upper"/> that t takes and the bin's groups allow, or -1.</summary>
    public int LargestBelow(int k, int t, int upper)
    {
        int p = upper - 1;
        p = p >= ColStart[k] ? Find(p) : -1;
        bool all = colAll[k * T + t];
        while (p >= 0 && (Avail[p] <= 0 || (!all && !x.TypeOk[ColShape[p] * T + t]) || Held(p)))
            p = p > ColStart[k] ? Find(p - 1) : -1;
        return p;
    }

    /// <summary>
    /// The smallest available shape of column k from position <paramref name="lo"/> up that t takes, with a key that
    /// fits <paramref name="room"/>, or -1 (the column's other checks are the caller's).
    /// </summary>
    public int SmallestFrom(int k, int t, long[] room, int lo)
    {
        int p = lo < ColStart[k + 1] ? FindUp(lo) : -1;
        bool all = colAll[k * T + t];
        while (p >= 0 && ColKey[p] <= room[Sd] && (Avail[p] <= 0 || (!all && !x.TypeOk[ColShape[p] * T + t]) || Held(p)))
            p = p + 1 < ColStart[k + 1] ? FindUp(p + 1) : -1;
        return p >= 0 && ColKey[p] <= room[Sd] ? p : -1;
    }
}
