using static Karpetrack.Tests.Recommend.Packing.PackingInstances;

namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>The column greedy's columns: shared by classes that allow the same new bins, and by many anti-affinity groups.</summary>
public class GreedyColumnsTests
{
    private const long GiB = 1L << 30;

    private static BinType Type(int id, double cores, double gib, decimal price) =>
        new(id, $"t{id}", Demand.Node((long)(cores * 1000) - 350, (long)(gib * GiB * 0.95) - 256L * 1024 * 1024, 0, 108), price);

    private static readonly BinType[] Types = [Type(0, 2, 3.5, 0.01m), Type(1, 4, 7.2, 0.03m), Type(2, 8, 14.6, 0.06m), Type(3, 16, 59.4, 0.15m), Type(4, 4, 14.6, 0.04m), Type(5, 8, 29.6, 0.08m)];

    /// <summary>
    /// A mix with 150 hostname anti-affinity groups, each its own constraint class as in the recommender (the pods'
    /// shape carries the term): one column per class and group made more than <see cref="ShapeColumns.MaxColumns"/>, so
    /// the greedy fell back to the scanning greedy (0.6-0.8 s at 100k pods). The groups now share the columns of the
    /// shapes whose classes allow the same types, and the fill still keeps each group's pods apart.
    /// </summary>
    [Fact]
    public void ManyAntiAffinityGroupsShareColumnsAndStayApart()
    {
        var rng = new Random(5);
        var items = new List<PackItem>();
        int[] cores = [250, 500, 1000, 2000];
        for (int g = 0; g < 150; g++)
        {
            long cpu = cores[rng.Next(cores.Length)], mem = (long)(cpu / 1000.0 * GiB * (1 + 3 * rng.NextDouble()));
            for (int r = 5 + rng.Next(16); r > 0; r--) items.Add(new PackItem(items.Count, new Demand(cpu, mem), 10 + g, g));
        }
        for (int i = 0; i < 2000; i++)
        {
            long cpu = cores[rng.Next(cores.Length)];
            items.Add(new PackItem(items.Count, new Demand(cpu, (long)(cpu / 1000.0 * GiB * (1 + 3 * rng.NextDouble()))), rng.Next(2), -1));
        }
        // Class 1 keeps off the memory-heavy types (4, 5); the groups' classes allow every type, as class 0.
        var p = Problem(items, Types, typeAllows: (c, t) => c != 1 || t.Id < 4);
        var x = new PackingInstance(p);
        var dual = DualBound.Compute(x);
        var st = new Assignment(x, dual);
        var order = Enumerable.Range(0, x.S).Where(s => x.AnyType[s]).ToList();
        st.SortShapes(order);
        Assert.NotNull(ShapeColumns.Create(st, order));

        Greedy.Run(st, new PackingOptions());
        var greedy = st.ToSolution("column greedy");
        AssertValid(p, greedy);
        Assert.Empty(greedy.Unplaced);

        var scan = new Assignment(x, dual);
        Greedy.Run(scan, new PackingOptions { ScanGreedy = true });
        var scanned = scan.ToSolution("scanning greedy");
        AssertValid(p, scanned);
        // Solve runs both (the scanning greedy as a third construction where groups are) and keeps the cheapest.
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.True(s.Cost <= Math.Min(greedy.Cost, scanned.Cost), $"{s.Cost} > {greedy.Cost} / {scanned.Cost}");
        Assert.True(s.LowerBound <= s.Cost);
    }

    /// <summary>Classes that allow the same types share a row; a class allowing other types, or a GPU rule, does not.</summary>
    [Fact]
    public void ClassesThatAllowTheSameTypesShareARow()
    {
        var items = new List<PackItem>
        {
            new(0, new Demand(500, GiB), 0, -1), new(1, new Demand(700, GiB), 3, -1), new(2, new Demand(500, GiB), 1, -1),
            new(3, new Demand(900, 2 * GiB), 2, -1), new(4, new Demand(500, GiB), 4, 0),
        };
        // 0, 3 and 4 allow every type; 1 and 2 only the first four.
        var p = Problem(items, Types, typeAllows: (c, t) => c is 0 or 3 or 4 || t.Id < 4);
        var x = new PackingInstance(p);
        int Row(int item) => x.SRow[x.ShapeOf[item]];
        Assert.Equal(Row(0), Row(1));
        Assert.Equal(Row(0), Row(4));
        Assert.Equal(Row(2), Row(3));
        Assert.NotEqual(Row(0), Row(2));
    }
}

/// <summary>
/// The column greedy's choice of bin type skips the dry runs its score bounds rule out and commits the chosen dry run
/// (<see cref="PackingOptions.ChoiceBounds"/>): a pure speed-up, so the bins must be exactly those of a greedy that
/// dry-runs every type and fills the chosen one again.
/// </summary>
public class GreedyChoiceBoundsTests
{
    public static TheoryData<int, bool, bool> Cases()
    {
        var data = new TheoryData<int, bool, bool>();
        for (int seed = 1; seed <= 12; seed++) { data.Add(seed, seed % 2 == 0, seed % 3 == 0); }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SkippedDryRunsChangeNoBin(int seed, bool constraints, bool antiAffinity)
    {
        var p = RandomProblem(seed, 400 + 150 * seed, types: 4 + seed % 5, constraints, existing: seed % 4 == 1, antiAffinity);
        var x = new PackingInstance(p);
        var dual = DualBound.Compute(x);
        foreach (bool byDual in new[] { false, true })
        {
            string Bins(bool bounds)
            {
                var st = new Assignment(x, dual);
                ExistingCapacity.Fill(st);
                Greedy.Run(st, new PackingOptions { ChoiceByDual = byDual, ChoiceBounds = bounds });
                return string.Join("\n", st.Bins.Select(b => b.Type + ":" + string.Join(",", b.Items)));
            }
            var plain = Bins(false);
            Assert.NotEmpty(plain);
            Assert.Equal(plain, Bins(true));
        }
    }
}
