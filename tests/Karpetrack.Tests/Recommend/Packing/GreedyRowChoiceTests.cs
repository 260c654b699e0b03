using static Karpetrack.Tests.Recommend.Packing.PackingInstances;

namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>
/// The column greedy chooses a bin type again when the largest remaining shape's constraint row changes: a type chosen
/// for a pinned pod must not go on taking the unpinned pods after it when another type suits them better.
/// </summary>
public class GreedyRowChoiceTests
{
    private const long GiB = 1L << 30;

    /// <summary>
    /// Type "ch" ($10) and type "gp" ($9.60) both hold five 3-core pods. The one pinned pod (class 1, "ch" only, 3.1
    /// cores) is the largest, so the first bin is a "ch" with it and four unpinned pods; the next heads are unpinned pods
    /// worth more than 0.9 of the pinned one, so before this rule the choice stuck to "ch" for the remaining 20 pods
    /// ($50 in all); chosen again, they go on "gp" ($48.40).
    /// </summary>
    [Fact]
    public void AChoiceForAPinnedPodDoesNotCarryOverToUnpinnedOnes()
    {
        var types = new[] { new BinType(0, "ch", Demand.Node(15900, 28 * GiB), 10m), new BinType(1, "gp", Demand.Node(15900, 56 * GiB), 9.6m) };
        var items = new List<PackItem> { new(0, new Demand(3100, 5 * GiB), 1) };
        for (int i = 1; i <= 24; i++) items.Add(new PackItem(i, new Demand(3000, 5 * GiB), 0));
        var p = Problem(items, types, typeAllows: (c, t) => c == 0 || t.Name == "ch");
        var x = new PackingInstance(p);
        var dual = DualBound.Compute(x);
        Assert.True(dual.Value[x.ShapeOf[1]] >= 0.9 * dual.Value[x.ShapeOf[0]], "the unpinned pods' worth must not trigger a new choice by itself");

        var st = new Assignment(x, dual);
        Greedy.Run(st, new PackingOptions());
        var greedy = st.ToSolution("column greedy");
        AssertValid(p, greedy);
        Assert.Empty(greedy.Unplaced);
        Assert.Equal(1, greedy.NewBins.Count(b => b.Type.Name == "ch"));
        Assert.Equal(4, greedy.NewBins.Count(b => b.Type.Name == "gp"));
        Assert.Equal(48.4m, greedy.Cost);
    }
}
