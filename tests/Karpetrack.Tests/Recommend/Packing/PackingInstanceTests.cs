namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>
/// How the packing instance is built: each constraint class's compatibility asked once and right for every shape of the
/// class, whatever order the items come in; and an instance of counted items is the instance over every copy.
/// </summary>
public class PackingInstanceTests
{
    private const int D = PackingInstance.D;

    [Fact]
    public void CompatibilityIsAskedOncePerClassAndBinAndHoldsForEveryShape()
    {
        for (int seed = 1; seed <= 40; seed++)
        {
            var rng = new Random(seed);
            var p0 = PackingInstances.RandomProblem(seed, 20 + rng.Next(60), 2 + rng.Next(5), constraints: true, existing: true, antiAffinity: true);
            // Five classes in random order, each allowing its own random types and bins; with a type of no room for some.
            var allowType = new bool[5, p0.Types.Count];
            var allowBin = new bool[5, p0.Existing.Count];
            for (int c = 0; c < 5; c++)
            {
                for (int t = 0; t < p0.Types.Count; t++) allowType[c, t] = rng.Next(3) > 0;
                for (int e = 0; e < p0.Existing.Count; e++) allowBin[c, e] = rng.Next(2) > 0;
            }
            var typeCalls = new Dictionary<(int, int), int>();
            var binCalls = new Dictionary<(int, int), int>();
            var items = p0.Items.Select(i => i with { Constraint = rng.Next(5) }).ToList();
            var types = p0.Types.Select((t, k) => k == 0 && seed % 3 == 0 ? t with { MaxCount = 0 } : t).ToList();
            var p = PackingInstances.Problem(items, types, p0.Existing,
                (c, t) => { typeCalls[(c, t.Id)] = typeCalls.GetValueOrDefault((c, t.Id)) + 1; return allowType[c, t.Id]; },
                (c, b) => { binCalls[(c, b.Id - 500)] = binCalls.GetValueOrDefault((c, b.Id - 500)) + 1; return allowBin[c, b.Id - 500]; });
            var x = new PackingInstance(p);

            var classes = items.Select(i => i.Constraint).Distinct().ToList();
            foreach (int c in classes)
            {
                for (int t = 0; t < x.T; t++) Assert.Equal(1, typeCalls.GetValueOrDefault((c, t)));
                for (int e = 0; e < x.E; e++) Assert.Equal(1, binCalls.GetValueOrDefault((c, e)));
            }
            Assert.Equal(classes.Count * x.T, typeCalls.Count);

            var rowOfPattern = new Dictionary<string, int>();
            int placeable = 0;
            for (int s = 0; s < x.S; s++)
            {
                int c = x.SCon[s];
                var dem = x.ShapeDemand(s);
                for (int t = 0; t < x.T; t++)
                    Assert.Equal(allowType[c, t] && types[t].MaxCount > 0 && dem.FitsIn(types[t].Capacity), x.TypeOk[s * x.T + t]);
                for (int e = 0; e < x.E; e++)
                    Assert.Equal(allowBin[c, e] && dem.FitsIn(p.Existing[e].Free), x.BinOk[s * x.E + e]);
                // Rows: one per pattern of allowed types (no GPU here), numbered in order of first appearance.
                var pattern = string.Concat(Enumerable.Range(0, x.T).Select(t => allowType[c, t] && types[t].MaxCount > 0 ? '1' : '0'))
                    + (Enumerable.Range(0, x.T).Any(t => x.TypeOk[s * x.T + t]) ? "g" : "-");
                if (!rowOfPattern.TryGetValue(pattern, out int row)) rowOfPattern[pattern] = row = rowOfPattern.Count;
                Assert.Equal(row, x.SRow[s]);
                if (x.AnyType[s] || x.AnyBin[s]) placeable += x.SItems[s].Length;
            }
            Assert.Equal(placeable, x.PlaceableItems);
        }
    }

    [Fact]
    public void ACountedInstanceIsTheInstanceOverEveryCopy()
    {
        for (int seed = 1; seed <= 40; seed++)
        {
            var rng = new Random(seed);
            var p0 = PackingInstances.RandomProblem(seed, 5 + rng.Next(30), 2 + rng.Next(4), constraints: true, antiAffinity: true);
            // Distinct items (one per shape) with their counts, and the same items copied out in random order.
            var distinct = p0.Items.DistinctBy(i => (i.Constraint, i.AntiAffinityGroup, i.Demand)).Select((i, k) => i with { Id = k }).ToList();
            var copies = distinct.Select(_ => 1 + rng.Next(rng.Next(2) == 0 ? 3 : 400)).ToArray();
            var all = distinct.SelectMany((i, k) => Enumerable.Repeat(i, copies[k])).OrderBy(_ => rng.Next()).Select((i, k) => i with { Id = k }).ToList();
            var expanded = new PackingInstance(PackingInstances.Problem(all, p0.Types, [], p0.TypeAllows, p0.BinAllows));
            var counted = PackingInstance.Counted(PackingInstances.Problem(distinct, p0.Types, [], p0.TypeAllows, p0.BinAllows), copies);

            Assert.Equal(expanded.N, counted.N);
            Assert.Equal(expanded.S, counted.S);
            Assert.Equal(expanded.SDem, counted.SDem);
            Assert.Equal(expanded.SCon, counted.SCon);
            Assert.Equal(expanded.SAa, counted.SAa);
            Assert.Equal(expanded.SItems.Select(m => m.Length), counted.SItems.Select(m => m.Length));
            Assert.Equal(expanded.TypeOk, counted.TypeOk);
            Assert.Equal(expanded.AnyType, counted.AnyType);
            Assert.Equal(expanded.SRow, counted.SRow);
            Assert.Equal(expanded.PlaceableItems, counted.PlaceableItems);
            // Every item in exactly one shape, in ascending order, and ShapeOf agrees.
            var seen = new bool[counted.N];
            for (int s = 0; s < counted.S; s++)
            {
                Assert.True(counted.SItems[s].SequenceEqual(counted.SItems[s].Order()));
                foreach (int i in counted.SItems[s]) { Assert.False(seen[i]); seen[i] = true; Assert.Equal(s, counted.ShapeOf[i]); }
            }
            Assert.All(seen, Assert.True);
            Assert.Equal(DualBound.Compute(expanded).Reported, DualBound.Compute(counted).Reported);
        }
    }

    [Fact]
    public void CountsThatDoNotMatchTheItemsAreRefused()
    {
        var p = PackingInstances.RandomProblem(1, 3, 2);
        Assert.Throws<ArgumentException>(() => PackingInstance.Counted(p, [1, 2]));
        Assert.Throws<ArgumentException>(() => PackingInstance.Counted(p, [1, 0, 2]));
    }
}
