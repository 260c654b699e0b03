namespace Karpetrack;

/// <summary>
/// Bin by bin, like FFD but cost-aware: the next bin takes the largest remaining shape and then whatever else of the
/// remaining shapes fits; its type is the one whose fill absorbs the most demand per dollar, a choice re-examined
/// whenever the largest remaining shape changes much, not for every bin. <see cref="ColumnGreedy"/> does the work;
/// <see cref="ScanGreedy"/> is its fallback when shapes vary in too many dimensions, and a second opinion where hostname
/// anti-affinity groups are (<see cref="PackingOptions.ScanGreedy"/>).
/// </summary>
internal static class Greedy
{
    public static void Run(Assignment st, PackingOptions o)
    {
        var x = st.X;
        var order = new List<int>();
        for (int s = 0; s < x.S; s++)
        {
            if (st.Remaining(s) == 0) continue;
            if (!x.AnyType[s]) st.MarkShapeUnplaced(s, x.UnplaceableReason(s)!);
            else order.Add(s);
        }
        st.SortShapes(order);
        if (order.Count == 0) return;
        if (!o.ScanGreedy && ColumnGreedy.Create(st, order, o) is { } column) column.Run();
        else new ScanGreedy(st, order, o).Run();
    }
}
