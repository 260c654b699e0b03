namespace Karpetrack;

/// <summary>
/// The greedy's fallback when shapes vary in too many dimensions for <see cref="ColumnGreedy"/>: a bin takes the
/// largest remaining shape (by dual value) and then, first fit, whatever else fits, scanning a bounded stretch from the
/// largest and another from the smallest; its type is the one whose fill absorbs the most dual value per dollar.
/// </summary>
internal sealed class ScanGreedy
{
    private const int D = PackingInstance.D;
    private readonly Assignment st;
    private readonly PackingInstance x;
    private readonly List<int> order;
    private readonly int L;
    private readonly long[] sufMin;        // per position: the smallest demand from there on, per dimension
    // A doubly linked list of the positions still holding items, so that exhausted shapes cost nothing.
    private readonly int[] nxt, prv;
    private int head, tail;
    private readonly long[] used = new long[D];
    private readonly List<int> groups = [];
    private readonly List<(int Pos, long K)> take = [];
    private readonly int scanLimit;
    private double worth;

    public ScanGreedy(Assignment st, List<int> order, PackingOptions o)
    {
        this.st = st;
        x = st.X;
        this.order = order;
        L = order.Count;
        sufMin = new long[(L + 1) * D];
        for (int r = 0; r < D; r++) sufMin[L * D + r] = long.MaxValue;
        for (int pos = L - 1; pos >= 0; pos--)
            for (int r = 0; r < D; r++) sufMin[pos * D + r] = Math.Min(sufMin[(pos + 1) * D + r], x.SDem[order[pos] * D + r]);
        nxt = new int[L + 1];
        prv = new int[L + 1];
        for (int i = 0; i < L; i++) { nxt[i] = i + 1; prv[i] = i - 1; }
        head = 0; tail = L - 1;
        scanLimit = Math.Max(16, o.ScanLimit);
    }

    public void Run()
    {
        var dual = st.Dual;
        int chosen = -1;
        double chosenAtValue = 0, chosenScore = 0;
        int sinceChoice = 0;
        while (head < L)
        {
            int s = order[head];
            if (st.Remaining(s) == 0) { Unlink(head); continue; }
            bool reconsider = chosen < 0 || sinceChoice >= 32 || dual.Value[s] < 0.9 * chosenAtValue
                || !x.TypeOk[s * x.T + chosen] || st.TypeCount[chosen] >= x.MaxCount[chosen];
            if (reconsider)
            {
                chosen = -1;
                chosenScore = double.NegativeInfinity;
                foreach (int t in x.TypesByPrice)
                {
                    if (!x.TypeOk[s * x.T + t] || st.TypeCount[t] >= x.MaxCount[t]) continue;
                    double score = Fill(t, commit: false) / Math.Max(x.Price[t], 1e-12);
                    // Cheapest first, and a dearer type must be clearly better: at the LP optimum many types
                    // tie on dual value, and smaller bins waste less at the end.
                    if (score > chosenScore * 1.01 || chosen < 0) { chosenScore = score; chosen = t; }
                }
                chosenAtValue = dual.Value[s];
                sinceChoice = 0;
                if (chosen < 0) { st.MarkShapeUnplaced(s, st.MaxCountReason(s)); Unlink(head); continue; }
            }
            Fill(chosen, commit: true);
            sinceChoice++;
        }
    }

    private void Unlink(int pos)
    {
        if (prv[pos] >= 0) nxt[prv[pos]] = nxt[pos]; else head = nxt[pos];
        if (nxt[pos] < L) prv[nxt[pos]] = prv[pos]; else tail = prv[pos];
    }

    /// <summary>Fills a fresh bin of type t (dry run or for real) and returns the dual value it absorbs.</summary>
    private double Fill(int t, bool commit)
    {
        Array.Clear(used);
        groups.Clear();
        take.Clear();
        worth = 0;
        int lastFront = -1;
        int scanned = 0;
        for (int pos = head; pos < L && scanned < scanLimit; pos = nxt[pos], scanned++)
        {
            lastFront = pos;
            if (!Try(t, pos)) { lastFront = L; break; }
        }
        if (lastFront < L)
        {
            scanned = 0;
            for (int pos = tail; pos > lastFront && pos >= 0 && scanned < scanLimit; pos = prv[pos], scanned++) Try(t, pos);
        }
        if (commit && take.Count > 0)
        {
            var bin = st.OpenBin(t);
            foreach (var (pos, k) in take)
            {
                int s = order[pos];
                st.PlaceCopies(bin, s, k);
                if (st.Remaining(s) == 0) Unlink(pos);
            }
        }
        return worth;
    }

    /// <summary>Takes what fits of the shape at pos; false when nothing from pos on can fit any more.</summary>
    private bool Try(int t, int pos)
    {
        int s = order[pos];
        for (int r = 0; r < D; r++) if (x.Cap[t * D + r] - used[r] < sufMin[pos * D + r]) return false;
        if (!x.TypeOk[s * x.T + t]) return true;
        long k = Math.Min(st.Remaining(s), x.Copies(s, used, x.Cap, t));
        if (k <= 0) return true;
        if (x.SAa[s] >= 0)
        {
            if (groups.Contains(x.SAa[s])) return true;
            groups.Add(x.SAa[s]);
            k = 1;
        }
        x.Add(used, s, k);
        worth += k * st.Dual.Value[s];
        take.Add((pos, k));
        return true;
    }
}
