namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>Packing instances and the validity check the packer's tests share (also compiled into the oracle tests).</summary>
internal static class PackingInstances
{
    private const long GiB = 1L << 30;

    internal static PackingProblem Problem(IReadOnlyList<PackItem> items, IReadOnlyList<BinType> types, IReadOnlyList<ExistingBin>? existing = null,
        Func<int, BinType, bool>? typeAllows = null, Func<int, ExistingBin, bool>? binAllows = null) => new()
    {
        Items = items,
        Types = types,
        Existing = existing ?? [],
        TypeAllows = typeAllows ?? ((_, _) => true),
        BinAllows = binAllows ?? ((_, _) => true),
    };

    /// <summary>Random instances with a few types, optional constraint classes, existing capacity and anti-affinity.</summary>
    internal static PackingProblem RandomProblem(int seed, int items, int types, bool constraints = false, bool existing = false, bool antiAffinity = false)
    {
        var rng = new Random(seed);
        var ts = new List<BinType>();
        for (int t = 0; t < types; t++)
        {
            long cpu = 1000L * (1 << rng.Next(1, 4)) - 350;
            long mem = GiB * (1 << rng.Next(1, 5)) - 256L * 1024 * 1024;
            decimal price = Math.Round(0.001m + (decimal)rng.NextDouble() * 0.05m * (cpu / 1000m + mem / GiB / 4m), 6);
            ts.Add(new BinType(t, $"type{t}", Demand.Node(cpu, mem, 0, 10 + rng.Next(100)), price));
        }
        var its = new List<PackItem>();
        for (int i = 0; i < items; i++)
        {
            long cpu = 250L * (1 + rng.Next(6));
            long mem = (long)(cpu / 1000.0 * GiB * (0.5 + 4 * rng.NextDouble()));
            int con = constraints ? rng.Next(3) : 0;
            int aa = antiAffinity && rng.Next(4) == 0 ? rng.Next(2) : -1;
            its.Add(new PackItem(100 + i, new Demand(cpu, mem), con, aa));
        }
        var ex = new List<ExistingBin>();
        if (existing)
            for (int e = 0; e < 2; e++) ex.Add(new ExistingBin(500 + e, $"node{e}", Demand.Node(250L * rng.Next(1, 8), GiB * rng.Next(1, 6), 0, 5)));
        // Constraint 1 excludes odd types, 2 excludes type 0 and the second existing node.
        return Problem(its, ts, ex,
            (c, t) => c == 0 || (c == 1 && t.Id % 2 == 0) || (c == 2 && t.Id != 0),
            (c, b) => c != 2 || b.Id != 501);
    }

    /// <summary>Every item exactly once; every bin within its capacity in every dimension; constraints and anti-affinity kept.</summary>
    internal static void AssertValid(PackingProblem p, PackingSolution s)
    {
        var byId = p.Items.ToDictionary(i => i.Id);
        var seen = new HashSet<int>();
        decimal cost = 0;
        foreach (var b in s.NewBins)
        {
            Assert.Contains(b.Type, p.Types);
            var sum = Demand.Zero;
            var groups = new HashSet<int>();
            foreach (var id in b.Items)
            {
                Assert.True(seen.Add(id), $"item {id} placed twice");
                var it = byId[id];
                sum += it.Demand;
                Assert.True(p.TypeAllows(it.Constraint, b.Type), $"item {id} on a type its constraint excludes");
                if (it.AntiAffinityGroup >= 0) Assert.True(groups.Add(it.AntiAffinityGroup), $"anti-affine items share bin {b.Type.Name}");
            }
            Assert.Equal(sum, b.Used);
            Assert.True(sum.FitsIn(b.Type.Capacity), $"{b.Type.Name} overfull: {sum} > {b.Type.Capacity}");
            cost += b.Type.PricePerHour;
        }
        foreach (var e in p.Existing)
        {
            var sum = Demand.Zero;
            var groups = new HashSet<int>();
            foreach (var (id, bin) in s.OnExisting.Where(kv => kv.Value == e.Id))
            {
                var it = byId[id];
                sum += it.Demand;
                Assert.True(p.BinAllows(it.Constraint, e));
                if (it.AntiAffinityGroup >= 0) Assert.True(groups.Add(it.AntiAffinityGroup));
            }
            Assert.True(sum.FitsIn(e.Free), $"existing {e.Name} overfull");
        }
        foreach (var id in s.OnExisting.Keys) Assert.True(seen.Add(id), $"item {id} placed twice");
        foreach (var u in s.Unplaced)
        {
            Assert.True(seen.Add(u.Item), $"item {u.Item} both placed and unplaced");
            Assert.False(string.IsNullOrWhiteSpace(u.Reason));
        }
        Assert.Equal(p.Items.Count, seen.Count);
        Assert.Equal(cost, s.Cost);
    }
}
