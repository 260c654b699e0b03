using Xunit.Abstractions;
using static Karpetrack.Tests.Recommend.Packing.PackingInstances;

namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>
/// The floor cuts on the resource LP (<see cref="DualBound.WithFloorCuts"/>): a bin holds Σ⌊cpu/q⌋ ≤ ⌊capacity/q⌋ of
/// its items, which the LP lacks. The bound with them is never above a proven optimum, and it lifts the bound where
/// pods are large against the bins they fit and small pods have a cheaper class of their own.
/// </summary>
public class FloorCutBoundTests(ITestOutputHelper output)
{
    private const long GiB = 1L << 30;

    /// <summary>
    /// Small random instances shaped like the provisioning family's on the real feeds (node classes of 1.9-15.9 cores,
    /// the small ones cheap per core; pods of 0.5-8 cores), where the cuts bite: the bound with them never above the
    /// optimum our exhaustive search proves, never below the bound without them, and above it on some.
    /// </summary>
    [Fact]
    public void TheFloorCutBoundIsNeverAboveTheProvenOptimum() =>
        AssertNeverAboveTheProvenOptimum(60, seed => LargePods(7700 + seed, 4 + seed % 9, constraints: seed % 2 == 1), minProven: 50, minHigher: 5);

    /// <summary>
    /// As above, with what the recommender also hands the packer: existing nodes' free room (the bound values it at the
    /// floored free capacity), a constraint class that may not use one of them, and a GPU class no pod needs (whose GPU
    /// dimension the cut takes over).
    /// </summary>
    [Fact]
    public void WithExistingRoomAndAnUnusedGpuClassTheFloorCutBoundIsStillNeverAboveTheOptimum() =>
        AssertNeverAboveTheProvenOptimum(40, seed =>
        {
            var basic = LargePods(8800 + seed, 5 + seed % 8, constraints: seed % 2 == 1);
            var rng = new Random(seed);
            var types = basic.Types.Append(new BinType(basic.Types.Count, "gpu", Demand.Node(7900, 32 * GiB, 1, 20), 1.5m)).ToList();
            var existing = Enumerable.Range(0, 1 + seed % 3)
                .Select(e => new ExistingBin(900 + e, $"node{e}", Demand.Node(500L * rng.Next(1, 10), GiB * rng.Next(1, 12), 0, 2 + rng.Next(4)))).ToList();
            return Problem(basic.Items, types, existing, basic.TypeAllows, (c, b) => c == 0 || b.Id != 900);
        }, minProven: 30, minHigher: 3);

    /// <summary>
    /// The resource LP and the floor-cut LP solved by the simplex (<see cref="DualBound.WithExactLp"/>), on both kinds of
    /// instance above (constraint classes, existing room, an unused GPU class): never above the proven optimum, never below
    /// the ascent's bound with the cuts.
    /// </summary>
    [Fact]
    public void TheExactLpBoundIsNeverAboveTheProvenOptimum()
    {
        AssertNeverAboveTheProvenOptimum(40, seed => LargePods(6600 + seed, 4 + seed % 9, constraints: seed % 2 == 1), minProven: 32, minHigher: 3, exactLp: true);
        AssertNeverAboveTheProvenOptimum(40, seed =>
        {
            var basic = RandomProblem(6700 + seed, 5 + seed % 8, 2 + seed % 3, constraints: true, existing: seed % 2 == 0);
            var types = basic.Types.Append(new BinType(basic.Types.Count, "gpu", Demand.Node(7900, 32 * GiB, 1, 20), 1.5m)).ToList();
            return Problem(basic.Items, types, basic.Existing, basic.TypeAllows, basic.BinAllows);
        }, minProven: 32, minHigher: 3, exactLp: true);
    }

    /// <summary>
    /// On each of <paramref name="count"/> instances whose optimum the exhaustive search proves: the bound with the cuts is
    /// never above it and never below the bound without them; enough are proven, and the cuts lift the bound on some.
    /// With <paramref name="exactLp"/>, the same of the bound with the cuts and the exact LP against the cuts alone.
    /// </summary>
    private void AssertNeverAboveTheProvenOptimum(int count, Func<int, PackingProblem> instance, int minProven, int minHigher, bool exactLp = false)
    {
        int proven = 0, higher = 0;
        for (int seed = 0; seed < count; seed++)
        {
            var p = instance(seed);
            var exact = Packer.Exact(p, TimeSpan.FromSeconds(2));
            AssertValid(p, exact);
            if (!exact.ProvenOptimal || exact.Unplaced.Count > 0) continue;
            proven++;
            var x = new PackingInstance(p);
            var plain = DualBound.Compute(x);
            var cut = plain.WithFloorCuts(x);
            if (exactLp) (plain, cut) = (cut, cut.WithExactLp(x, 5000));
            string what = exactLp ? "exact-LP bound" : "floor-cut bound";
            Assert.True(cut.Reported <= exact.Cost, $"seed {seed}: {what} {cut.Reported} above the optimum {exact.Cost}");
            Assert.True(cut.Reported >= plain.Reported, $"seed {seed}: {what} {cut.Reported} below the bound without {plain.Reported}");
            if (cut.Reported > plain.Reported) higher++;
        }
        output.WriteLine($"{proven} of {count} proven; {(exactLp ? "the exact LP" : "the floor cuts")} lifted the bound on {higher}");
        Assert.True(proven >= minProven, $"only {proven} of {count} proven");
        Assert.True(higher >= minHigher, $"{(exactLp ? "the exact LP" : "the floor cuts")} lifted the bound on only {higher} instances");
    }

    /// <summary>
    /// 30 pods of 4 cores, which only the 15.9-core class ($10) takes, three to a node (the LP packs 3.98), and 300 pods
    /// of 0.25 cores, 15 to a node of the 3.9-core class ($1) or in what the large nodes leave. The optimum is 10 large
    /// nodes and 10 small ones, $110; the LP without cuts says about $95, and the dual-feasible functions $100 (they
    /// value the small pods at nothing); with the cut at q = 4 cores the LP must buy 10 large nodes and fill their
    /// 3.9 spare cores with 156 small pods: $109.2, of which our dual ascent finds $108.55. Solve reports it (330 items,
    /// from 200 on).
    /// </summary>
    [Fact]
    public void TheCutCountsHowManyLargePodsANodeHolds()
    {
        var types = new[] { new BinType(0, "small", Demand.Node(3900, 64 * GiB), 1m), new BinType(1, "large", Demand.Node(15900, 64 * GiB), 10m) };
        var items = new List<PackItem>();
        for (int i = 0; i < 30; i++) items.Add(new PackItem(i, new Demand(4000, GiB), 0));
        for (int i = 30; i < 330; i++) items.Add(new PackItem(i, new Demand(250, GiB / 4), 0));
        var p = Problem(items, types);
        var x = new PackingInstance(p);
        var plain = DualBound.Compute(x);
        var cut = plain.WithFloorCuts(x);
        output.WriteLine($"without cuts {plain.Reported}, with {cut.Reported}");
        Assert.True(plain.Reported < 101m, $"without cuts {plain.Reported}");
        Assert.True(cut.Reported >= 108.5m && cut.Reported <= 110m, $"with cuts {cut.Reported}");
        var s = Packer.Solve(p, new PackingOptions { ColumnGenerationItems = 0 });
        AssertValid(p, s);
        Assert.Equal(cut.Reported, s.LowerBound);
        Assert.Equal(cut.Reported, s.ResourceBound);
        Assert.True(s.Cost >= s.LowerBound);
        Assert.Equal(plain.Reported, Packer.Solve(p, new PackingOptions { ColumnGenerationItems = 0, FloorCutMinItems = int.MaxValue }).LowerBound);
    }

    /// <summary>Where a pod asks for a GPU the GPU dimension is taken, so no cut is tried and the bound is the LP's.</summary>
    [Fact]
    public void NoCutWhereAPodAsksForAGpu()
    {
        var types = new[] { new BinType(0, "small", Demand.Node(3900, 64 * GiB), 1m), new BinType(1, "large", Demand.Node(15900, 64 * GiB, 4), 10m) };
        var items = new List<PackItem>();
        for (int i = 0; i < 30; i++) items.Add(new PackItem(i, new Demand(4000, GiB), 0));
        for (int i = 30; i < 330; i++) items.Add(new PackItem(i, new Demand(250, GiB / 4), 0));
        items.Add(new PackItem(330, new Demand(250, GiB, 1), 0));
        var x = new PackingInstance(Problem(items, types));
        var plain = DualBound.Compute(x);
        Assert.Same(plain, plain.WithFloorCuts(x));
    }

    /// <summary>Classes of 1.9, 3.9, 7.9 and 15.9 cores (the small ones cheapest per core, as on the real feeds); pods of 0.5-8 cores.</summary>
    internal static PackingProblem LargePods(int seed, int items, bool constraints)
    {
        var rng = new Random(seed);
        var types = new List<BinType>();
        long[] cpus = [1900, 3900, 7900, 15900];
        for (int t = 0; t < cpus.Length; t++)
        {
            decimal price = Math.Round((decimal)(cpus[t] / 1000.0 * (0.2 + 0.3 * t + 0.2 * rng.NextDouble())), 3);
            types.Add(new BinType(t, $"type{t}", Demand.Node(cpus[t], cpus[t] / 1000 * 4 * GiB, 0, 20), price));
        }
        long[] pods = [500, 1000, 2000, 4000, 4000, 8000];
        var its = new List<PackItem>();
        for (int i = 0; i < items; i++)
        {
            long cpu = pods[rng.Next(pods.Length)];
            its.Add(new PackItem(i, new Demand(cpu, (long)(cpu / 1000.0 * GiB * (1 + 3 * rng.NextDouble()))), constraints ? rng.Next(2) : 0));
        }
        // Constraint 1 may not use the 7.9-core class.
        return Problem(its, types, typeAllows: (c, t) => c == 0 || t.Id != 2);
    }
}
