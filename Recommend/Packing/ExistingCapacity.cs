namespace Karpetrack;

/// <summary>
/// Free capacity is already paid for: the most valuable items (by the dual) go there first, each to the
/// existing node it fits tightest; items that only fit existing nodes come before all others.
/// </summary>
internal static class ExistingCapacity
{
    public static void Fill(Assignment st)
    {
        var x = st.X;
        if (x.E == 0) return;
        var order = new List<int>();
        for (int s = 0; s < x.S; s++) if (x.AnyBin[s]) order.Add(s);
        order.Sort((a, b) => x.AnyType[a] != x.AnyType[b] ? (x.AnyType[a] ? 1 : -1) : st.CompareShapes(a, b));
        foreach (int s in order)
        {
            while (st.Remaining(s) > 0)
            {
                Bin? best = null;
                double bestWaste = double.PositiveInfinity;
                foreach (var b in st.Existing)
                {
                    if (!x.BinOk[s * x.E + b.Existing] || !st.AaOk(b, s) || !st.Fits(b, s)) continue;
                    double waste = st.WasteAfter(b, s, 1);
                    if (waste < bestWaste) { bestWaste = waste; best = b; }
                }
                if (best is null) break;
                long k = Math.Min(st.Remaining(s), x.SAa[s] >= 0 ? 1 : st.CopiesFit(best, s));
                st.PlaceCopies(best, s, k);
            }
        }
    }
}
