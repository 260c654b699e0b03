using static Karpetrack.Tests.Recommend.Packing.PackingInstances;

namespace Karpetrack.Tests.Recommend.Packing;

public class PackingTests
{
    private const long GiB = 1L << 30;

    [Fact]
    public void RandomInstancesAreValidAndNeverWorseThanTheBaselines()
    {
        for (int seed = 0; seed < 60; seed++)
        {
            var p = RandomProblem(seed, 5 + seed % 40 * 3, 2 + seed % 5, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 4 == 0);
            var s = Packer.Solve(p);
            AssertValid(p, s);
            foreach (var b in new[] { Packer.FirstFitDecreasing(p), Packer.BestFit(p), Packer.SingleLargeNode(p) })
            {
                AssertValid(p, b);
                if (b.Unplaced.Count <= s.Unplaced.Count) Assert.True(s.Cost <= b.Cost, $"seed {seed}: {s.Cost} > {b.Strategy} {b.Cost}");
            }
            Assert.True(s.LowerBound <= s.Cost || s.Unplaced.Count > 0, $"seed {seed}: bound {s.LowerBound} above cost {s.Cost}");
        }
    }

    [Fact]
    public void SolveIsExactOnTenItemsAndTheBoundIsBelowTheOptimum()
    {
        int proven = 0;
        for (int seed = 0; seed < 40; seed++)
        {
            var p = RandomProblem(1000 + seed, 3 + seed % 8, 2 + seed % 4, constraints: seed % 2 == 1, existing: seed % 5 == 0, antiAffinity: seed % 3 == 0);
            var exact = Packer.Exact(p, TimeSpan.FromSeconds(2));
            AssertValid(p, exact);
            if (!exact.ProvenOptimal) continue;
            proven++;
            var s = Packer.Solve(p);
            Assert.True(Packer.LowerBound(p) <= exact.Cost, $"seed {seed}: bound {Packer.LowerBound(p)} > optimum {exact.Cost}");
            Assert.Equal(exact.Cost, s.Cost);
        }
        Assert.True(proven >= 35, $"only {proven} of 40 proven");
    }

    [Fact]
    public void SolveIsWithinOnePercentOfTheOptimumOnThirtyItems()
    {
        int proven = 0;
        for (int seed = 0; seed < 12; seed++)
        {
            var p = RandomProblem(2000 + seed, 18 + seed, 3, constraints: seed % 2 == 0);
            var exact = Packer.Exact(p, TimeSpan.FromSeconds(1));
            AssertValid(p, exact);
            if (!exact.ProvenOptimal) continue;
            proven++;
            var s = Packer.Solve(p);
            Assert.True(s.LowerBound <= exact.Cost, $"seed {seed}: bound {s.LowerBound} > optimum {exact.Cost}");
            Assert.True(s.Cost <= exact.Cost * 1.01m, $"seed {seed}: {s.Cost} vs optimum {exact.Cost}");
        }
        Assert.True(proven >= 6, $"only {proven} of 12 proven");
    }

    [Fact]
    public void RuinAndRepairNeverRaisesTheCost()
    {
        var without = new PackingOptions { ImproveWork = 0, PortfolioItems = 0, ExactItems = 0 };
        var with = new PackingOptions { PortfolioItems = 0, ExactItems = 0 };
        for (int seed = 0; seed < 40; seed++)
        {
            var p = RandomProblem(3000 + seed, 20 + seed * 4, 2 + seed % 5, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 4 == 0);
            var before = Packer.Solve(p, without);
            var after = Packer.Solve(p, with);
            AssertValid(p, before);
            AssertValid(p, after);
            Assert.Equal(before.Unplaced.Count, after.Unplaced.Count);
            Assert.True(after.Cost <= before.Cost, $"seed {seed}: {after.Cost} > {before.Cost} without ruin and repair");
        }
    }

    /// <summary>The benchmark's request mix (perf-anchors §5) on Spot-like classes: one dominant cheap class, as in us-east-iad-1.</summary>
    [Fact]
    public void AThousandPodMixIsPackedWithinFivePercentOfTheBound()
    {
        var rng = new Random(1042);
        long[] cpus = [250, 500, 1000, 2000, 4000, 8000];
        int[] weights = [30, 25, 20, 15, 7, 3];
        int[] perCore = [1, 2, 2, 4, 4, 4, 8];
        var items = new List<PackItem>();
        for (int i = 0; i < 1000; i++)
        {
            int roll = rng.Next(100), k = 0;
            while (roll >= weights[k]) { roll -= weights[k]; k++; }
            double gib = cpus[k] / 1000.0 * perCore[rng.Next(perCore.Length)] * (0.6 + 0.8 * rng.NextDouble());
            items.Add(new PackItem(i, new Demand(cpus[k], (long)(gib * GiB)), 0));
        }
        BinType Type(int id, int cores, int gib, decimal price) => new(id, $"t{id}", Demand.Node(cores * 1000L - 350, (long)(gib * GiB * 0.95) - 256L * 1024 * 1024, 0, 108), price);
        var p = Problem(items, [Type(0, 16, 32, 0.01m), Type(1, 16, 64, 0.01m), Type(2, 8, 64, 0.01m), Type(3, 16, 128, 0.02m), Type(4, 4, 16, 0.01m)]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        var plain = Packer.Solve(p, new PackingOptions { ImproveWork = 0 });
        Assert.True(s.Cost <= plain.Cost, $"{s.Cost} > {plain.Cost} without ruin and repair");
        Assert.True(s.Cost <= s.LowerBound * 1.05m, $"{s.Cost} is more than 5 % above the bound {s.LowerBound}");
    }

    /// <summary>perf-anchors §5 request mix, as the benchmark draws it.</summary>
    private static List<PackItem> Mix(int n, int seed)
    {
        var rng = new Random(seed);
        long[] cpus = [250, 500, 1000, 2000, 4000, 8000];
        int[] weights = [30, 25, 20, 15, 7, 3];
        int[] perCore = [1, 2, 2, 4, 4, 4, 8];
        var items = new List<PackItem>();
        for (int i = 0; i < n; i++)
        {
            int roll = rng.Next(100), k = 0;
            while (roll >= weights[k]) { roll -= weights[k]; k++; }
            double gib = cpus[k] / 1000.0 * perCore[rng.Next(perCore.Length)] * (0.6 + 0.8 * rng.NextDouble());
            items.Add(new PackItem(i, new Demand(cpus[k], (long)(gib * GiB)), 0));
        }
        return items;
    }

    private static BinType SpotType(int id, double cores, double gib, decimal price) =>
        new(id, $"t{id}", Demand.Node((long)(cores * 1000) - 350, (long)(gib * GiB * 0.95) - 256L * 1024 * 1024, 0, 108), price);

    /// <summary>us-east-iad-1 of 2026-08-17: nearly every class at the $0.01 minimum bid, so one 16-core class does most of the work.</summary>
    private static readonly BinType[] IadLike = [SpotType(0, 16, 28, 0.01m), SpotType(1, 4, 7, 0.01m), SpotType(2, 16, 56, 0.01m), SpotType(3, 8, 28, 0.01m), SpotType(4, 16, 112, 0.02m), SpotType(5, 8, 56, 0.01m)];
    /// <summary>us-west-sjc-1 of 2026-08-17: prices that differ by class, a very cheap 2-core class, memory priced in the large ones.</summary>
    private static readonly BinType[] SjcLike = [SpotType(0, 2, 3.5, 0.01m), SpotType(1, 4, 7.2, 0.03m), SpotType(2, 8, 14.6, 0.06m), SpotType(3, 16, 59.4, 0.15m), SpotType(4, 4, 14.6, 0.04m), SpotType(5, 8, 29.6, 0.08m), SpotType(6, 2, 14.6, 0.03m), SpotType(7, 4, 29.6, 0.06m), SpotType(8, 8, 59.4, 0.12m)];

    /// <summary>
    /// The balanced fill against the previous largest-memory-first fill, on fixed seeds of the benchmark's mix: valid,
    /// never dearer, and within 5 % of the bound where the previous fill was not (it left 5.8-8 % at 10k pods).
    /// </summary>
    [Theory]
    [InlineData(1000, 11)]
    [InlineData(1000, 12)]
    [InlineData(3000, 13)]
    [InlineData(10000, 14)]
    public void TheBalancedFillIsNeverWorseThanThePreviousFillOnTheBenchmarkMix(int n, int seed)
    {
        foreach (var types in new[] { IadLike, SjcLike })
        {
            var p = Problem(Mix(n, seed), types);
            var balanced = Packer.Solve(p);
            var previous = Packer.Solve(p, new PackingOptions { BalancedFill = false });
            AssertValid(p, balanced);
            AssertValid(p, previous);
            Assert.Equal(previous.Unplaced.Count, balanced.Unplaced.Count);
            Assert.True(balanced.Cost <= previous.Cost, $"{types[0].Name}.. n={n}: {balanced.Cost} > {previous.Cost} with the previous fill");
            Assert.True(balanced.Cost <= balanced.LowerBound * 1.05m, $"n={n}: {balanced.Cost} is more than 5 % above the bound {balanced.LowerBound}");
        }
    }

    /// <summary>The bound stays a true lower bound whatever the fill: below every packing found, on random instances too.</summary>
    [Fact]
    public void TheBoundIsBelowBothFillsOnRandomInstances()
    {
        for (int seed = 0; seed < 30; seed++)
        {
            var p = RandomProblem(4000 + seed, 50 + seed * 10, 2 + seed % 5, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 4 == 0);
            foreach (var o in new[] { new PackingOptions(), new PackingOptions { BalancedFill = false } })
            {
                var s = Packer.Solve(p, o);
                AssertValid(p, s);
                Assert.True(s.LowerBound <= s.Cost || s.Unplaced.Count > 0, $"seed {seed}: bound {s.LowerBound} above cost {s.Cost}");
            }
        }
    }

    /// <summary>
    /// us-east-iad-1 of 2026-08-17 at market prices (no minimum bid), as the recommender buys: a compute class (4 cores,
    /// 7.5 GB) and a memory class (2 cores, 15 GB) at $0.001 are five to ten times cheaper per core and per GiB than
    /// the rest, so the cheap plan pairs them. Bins aimed at the dual's ratio left the compute class memory-full with a
    /// quarter of its cpu idle and the memory class the other way round (6.5 % above the bound at 10k pods).
    /// </summary>
    private static readonly BinType[] IadMarket =
    [
        SpotType(0, 16, 30 / 1.073741824, 0.01m), SpotType(1, 4, 7.5 / 1.073741824, 0.001m), SpotType(2, 2, 3.75 / 1.073741824, 0.001m),
        SpotType(3, 8, 15 / 1.073741824, 0.005m), SpotType(4, 16, 60 / 1.073741824, 0.01m), SpotType(5, 4, 15 / 1.073741824, 0.005m),
        SpotType(6, 8, 30 / 1.073741824, 0.005m), SpotType(7, 16, 120 / 1.073741824, 0.02m), SpotType(8, 4, 30 / 1.073741824, 0.005m),
        SpotType(9, 2, 15 / 1.073741824, 0.001m), SpotType(10, 8, 60 / 1.073741824, 0.01m),
    ];

    /// <summary>With the test's larger reservation (350m): 4.8 % and 8.7 % above the bound before, 3.5 % and 6.5 % now.</summary>
    [Theory]
    [InlineData(3000, 21, 4.2)]
    [InlineData(10000, 22, 7.5)]
    public void CheapComplementaryClassesArePairedCloseToTheBound(int n, int seed, double maxGapPercent)
    {
        var p = Problem(Mix(n, seed), IadMarket);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.True(s.LowerBound <= s.Cost);
        double gap = (double)(s.Cost / s.LowerBound - 1) * 100;
        Assert.True(gap <= maxGapPercent, $"n={n}: {s.Cost} is {gap:F2} % above the bound {s.LowerBound} (at most {maxGapPercent} %)");
    }

    /// <summary>
    /// The same classes as the recommender offers them (100m cpu and 5 % of memory reserved, 110 pods), as in the
    /// recommender bench: the least full bins are where the room is (the cheap compute class memory-full with a quarter of
    /// its cpu idle), and ruin and repair working on them as well as on the least efficient by the dual brings the plan
    /// from 5.2 % to within 5 % of the bound. With the least efficient bins alone it gained nothing on these seeds.
    /// </summary>
    [Theory]
    [InlineData(10_000, 10_000)]
    [InlineData(10_000, 31)]
    public void RuinAndRepairOnTheLeastFullBinsPairsTheCheapClassesWithinFivePercent(int n, int seed)
    {
        static BinType Offered(int id, double cores, double gb, decimal price)
        {
            long mem = (long)(gb * 1e9);
            return new(id, $"m{id}", Demand.Node((long)(cores * 1000) - 100, mem - (long)(mem * 0.05)), price);
        }
        BinType[] offered =
        [
            Offered(0, 16, 30, 0.01m), Offered(1, 4, 7.5, 0.001m), Offered(2, 2, 3.75, 0.001m), Offered(3, 8, 15, 0.005m),
            Offered(4, 16, 60, 0.01m), Offered(5, 4, 15, 0.005m), Offered(6, 8, 30, 0.005m), Offered(7, 16, 120, 0.02m),
            Offered(8, 4, 30, 0.005m), Offered(9, 2, 15, 0.001m), Offered(10, 8, 60, 0.01m),
        ];
        var p = Problem(Mix(n, seed), offered);
        var s = Packer.Solve(p);
        var plain = Packer.Solve(p, new PackingOptions { ImproveWork = 0 });
        AssertValid(p, s);
        Assert.Empty(s.Unplaced);
        Assert.True(s.Cost < plain.Cost, $"seed {seed}: ruin and repair saved nothing ({s.Cost})");
        Assert.True(s.Cost <= s.LowerBound * 1.05m, $"seed {seed}: {s.Cost} is more than 5 % above the bound {s.LowerBound} (without ruin and repair {plain.Cost})");
    }

    /// <summary>
    /// The sizes the speed goal is about (10k and 100k pods of the benchmark's mix): every pod placed once, within
    /// capacity, and the cost within 5 % of the bound on both kinds of price list.
    /// </summary>
    [Theory]
    [InlineData(10_000, 17)]
    [InlineData(100_000, 18)]
    public void LargeMixesAreValidAndWithinFivePercentOfTheBound(int n, int seed)
    {
        foreach (var types in new[] { IadLike, SjcLike })
        {
            var p = Problem(Mix(n, seed), types);
            var s = Packer.Solve(p);
            AssertValid(p, s);
            Assert.All(s.Unplaced, u => Assert.StartsWith("needs ", u.Reason));   // only pods larger than every class
            Assert.True(s.Cost <= s.LowerBound * 1.05m, $"n={n}: {s.Cost} is more than 5 % above the bound {s.LowerBound}");
        }
    }

    /// <summary>
    /// Pods come in classes of identical requests (replicas of a Deployment): 20k pods of 40 shapes, three constraint
    /// classes and one self-anti-affine group, all packed validly, with and without constraints and group. (Not yet
    /// within 5 % of the bound on this mix: 8.5 % without constraints, about 17 % with them.)
    /// </summary>
    [Fact]
    public void ManyReplicasOfFewShapesArePackedValidly()
    {
        var rng = new Random(99);
        var shapes = Enumerable.Range(0, 40).Select(_ => new Demand(250L * rng.Next(1, 17), (long)(GiB * (0.25 + 12 * rng.NextDouble())))).ToArray();
        var items = new List<PackItem>();
        for (int i = 0; i < 20_000; i++)
        {
            int k = rng.Next(shapes.Length);
            items.Add(new PackItem(i, shapes[k], k % 3, i % 500 == 0 ? 1 : -1));
        }
        // Constraint 1 keeps off the memory-heavy classes (odd ids), 2 off class 0.
        Func<int, BinType, bool> allows = (c, t) => c == 0 || (c == 1 && t.Id % 2 == 0) || (c == 2 && t.Id != 0);
        var p = Problem(items, SjcLike, typeAllows: allows);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.Empty(s.Unplaced);
        var plain = Problem(items.Select(i => i with { Constraint = 0, AntiAffinityGroup = -1 }).ToList(), SjcLike);
        var sp = Packer.Solve(plain);
        AssertValid(plain, sp);
        Assert.Empty(sp.Unplaced);
        Assert.True(sp.LowerBound <= sp.Cost);
    }

    /// <summary>
    /// Above <see cref="PackingOptions.LocalSearchItems"/> the old local search only downsizes (its other moves found
    /// nothing after the balanced fill, at up to 60 ms): on fixed seeds that fast path costs no more than the full one.
    /// </summary>
    [Theory]
    [InlineData(6000, 21)]
    [InlineData(10_000, 22)]
    public void SkippingTheOldLocalSearchCostsNothingOnTheBenchmarkMix(int n, int seed)
    {
        foreach (var types in new[] { IadLike, SjcLike })
        {
            var p = Problem(Mix(n, seed), types);
            var fast = Packer.Solve(p);
            var full = Packer.Solve(p, new PackingOptions { LocalSearchItems = int.MaxValue });
            AssertValid(p, fast);
            AssertValid(p, full);
            Assert.True(fast.Cost <= full.Cost, $"n={n}: {fast.Cost} > {full.Cost} with the full local search");
        }
    }

    /// <summary>
    /// Prices linear in cpu and memory with category factors (compute-heavy 15 % off, memory-heavy 15 % dearer), as
    /// on-demand lists price, offered as the recommender offers them: the greedy that chooses bin types by the share of
    /// the demand a fill absorbs filled the cheap compute class memory-full with a third of its cpu idle; the portfolio
    /// with the choice by dual value keeps the plan within 3 % of the bound, and never dearer than either rule alone.
    /// </summary>
    [Theory]
    [InlineData(10_000, 41)]
    [InlineData(3_000, 42)]
    public void LinearPricesWithCategoryFactorsArePackedCloseToTheBound(int n, int seed)
    {
        var types = new List<BinType>();
        foreach (var (cat, gbPerCpu, factor) in new[] { ("ch", 1.875, 0.85), ("gp", 3.75, 1.0), ("mh", 7.5, 1.15) })
            for (int k = 0; k < 5; k++)
            {
                int cpu = 2 << k;
                double gb = cpu * gbPerCpu;
                long mem = (long)(gb * 1e9);
                decimal price = Math.Round((decimal)((0.012 * cpu + 0.0016 * gb) * factor), 6);
                types.Add(new BinType(types.Count, $"{cat}{cpu}", Demand.Node(cpu * 1000L - 100, mem - (long)(mem * 0.05)), price));
            }
        var p = Problem(Mix(n, seed), types);
        var s = Packer.Solve(p);
        var sharesOnly = Packer.Solve(p, new PackingOptions { ChoicePortfolioItems = 0 });
        var dualOnly = Packer.Solve(p, new PackingOptions { ChoiceByDual = true });
        AssertValid(p, s);
        Assert.Empty(s.Unplaced);
        Assert.True(s.Cost <= sharesOnly.Cost && s.Cost <= dualOnly.Cost, $"{s.Cost} dearer than a rule alone ({sharesOnly.Cost}, {dualOnly.Cost})");
        Assert.True(s.Cost <= s.LowerBound * 1.03m, $"n={n}: {s.Cost} is {s.Cost / s.LowerBound - 1:P2} above the bound {s.LowerBound} (shares alone {sharesOnly.Cost})");
    }

    /// <summary>Shapes are numbered by their requests, not by where they first occur: the order of the input changes nothing but ids.</summary>
    [Fact]
    public void TheOrderOfTheItemsDoesNotChangeThePacking()
    {
        var items = Mix(5000, 23);
        var shuffled = items.OrderBy(i => (i.Id * 7919) % 5003).ToList();
        var a = Packer.Solve(Problem(items, SjcLike));
        var b = Packer.Solve(Problem(shuffled, SjcLike));
        Assert.Equal(a.Cost, b.Cost);
        Assert.Equal(a.LowerBound, b.LowerBound);
        Assert.Equal(a.NewBins.Select(x => x.Type.Id).Order(), b.NewBins.Select(x => x.Type.Id).Order());
    }

    [Fact]
    public void SameInputSameOutput()
    {
        var p = RandomProblem(7, 300, 6, constraints: true, existing: true, antiAffinity: true);
        var a = Packer.Solve(p);
        var b = Packer.Solve(p);
        Assert.Equal(a.Cost, b.Cost);
        Assert.Equal(a.NewBins.Select(x => (x.Type.Id, string.Join(",", x.Items))), b.NewBins.Select(x => (x.Type.Id, string.Join(",", x.Items))));
        Assert.Equal(a.OnExisting.OrderBy(kv => kv.Key), b.OnExisting.OrderBy(kv => kv.Key));
        Assert.Equal(a.Unplaced, b.Unplaced);
        Assert.Equal(a.LowerBound, b.LowerBound);
    }

    private static readonly BinType Small = new(0, "gp.vs1.xlarge-iad", Demand.Node(7650, 27 * GiB), 0.01m);
    private static readonly BinType Large = new(1, "gp.vs1.2xlarge-iad", Demand.Node(15650, 55 * GiB), 0.02m);
    private static readonly BinType MemoryHeavy = new(2, "mh.vs1.2xlarge-iad", Demand.Node(15650, 110 * GiB), 0.025m);
    private static readonly BinType Gpu = new(3, "gpu.vs2.xlargeplusplus-sjc", Demand.Node(23650, 58 * GiB, 1), 0.15m);

    [Fact]
    public void AGiantPodIsReportedWithTheLargestAllowedClass()
    {
        var p = Problem([new PackItem(1, new Demand(40_000, 64 * GiB), 0), new PackItem(2, new Demand(1000, GiB), 0)], [Small, Large]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        var u = Assert.Single(s.Unplaced);
        Assert.Equal(1, u.Item);
        Assert.Equal("needs 40 cores, 64 GiB; the largest allowed class gp.vs1.2xlarge-iad has 15.65 cores, 55 GiB", u.Reason);
        Assert.Equal(0.01m, s.Cost);   // the rest is still packed
    }

    [Fact]
    public void APodNoClassAllowsSaysSo()
    {
        var p = Problem([new PackItem(1, new Demand(1000, GiB), 9)], [Small, Large], typeAllows: (c, _) => c != 9);
        var u = Assert.Single(Packer.Solve(p).Unplaced);
        Assert.Equal("no allowed server class (constraint 9 excludes all 2 classes)", u.Reason);
        var noGpu = Problem([new PackItem(1, new Demand(1000, GiB, 1), 0)], [Small, Large]);
        Assert.Equal("needs 1 GPU; none of the 2 allowed classes has a GPU", Assert.Single(Packer.Solve(noGpu).Unplaced).Reason);
    }

    [Fact]
    public void GpuPodsGoToGpuClassesAndOthersStayOff()
    {
        var p = Problem([new PackItem(1, new Demand(4000, 16 * GiB, 1), 0), new PackItem(2, new Demand(1000, 2 * GiB), 0)], [Small, Large, Gpu]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.Empty(s.Unplaced);
        Assert.Equal([1], s.NewBins.Single(b => b.Type == Gpu).Items);
        Assert.Equal([2], s.NewBins.Single(b => b.Type == Small).Items);
        Assert.Equal(0.16m, s.Cost);
    }

    [Fact]
    public void PodsThatFitExistingFreeCapacityOpenNoNode()
    {
        var p = Problem([new PackItem(1, new Demand(1000, 2 * GiB), 0), new PackItem(2, new Demand(500, GiB), 0)], [Small, Large],
            [new ExistingBin(42, "node-a", Demand.Node(2000, 4 * GiB, 0, 10))]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.Empty(s.NewBins);
        Assert.Equal(0m, s.Cost);
        Assert.Equal(42, s.OnExisting[1]);
        Assert.Equal(42, s.OnExisting[2]);
        Assert.Equal(0m, s.LowerBound);
    }

    [Fact]
    public void AMemoryHeavyMixChoosesMemoryHeavyClasses()
    {
        var items = Enumerable.Range(0, 12).Select(i => new PackItem(i, new Demand(2000, 18 * GiB), 0)).ToList();
        var p = Problem(items, [Small, Large, MemoryHeavy]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.All(s.NewBins, b => Assert.Equal(MemoryHeavy, b.Type));
        Assert.Equal(2, s.NewBins.Count);   // 6 × 18 GiB per 110 GiB node; 3 per 55 GiB node would cost 4 × 0.02
        Assert.True(s.LowerBound <= s.Cost);
    }

    [Fact]
    public void TwoAntiAffinePodsNeedTwoNodes()
    {
        var p = Problem([new PackItem(1, new Demand(500, GiB), 0, 7), new PackItem(2, new Demand(500, GiB), 0, 7)], [Small, Large]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.Equal(2, s.NewBins.Count);
        Assert.Equal(0.02m, s.Cost);
        Assert.Equal(0.02m, Packer.LowerBound(p));   // the bound knows they cannot share
    }

    [Fact]
    public void AntiAffineItemsNeverShareANewBin()
    {
        var items = Enumerable.Range(0, 3).Select(i => new PackItem(i, new Demand(100, 1 << 27), 0, AntiAffinityGroup: 0)).ToList();
        var solution = Packer.Solve(new PackingProblem
        {
            Items = items,
            Types = [new BinType(0, "small", Demand.Node(2000, 4L << 30), 0.001m)],
            TypeAllows = (_, _) => true,
            BinAllows = (_, _) => true,
        });
        Assert.Equal(3, solution.NewBins.Count);
    }

    /// <summary>
    /// Items of 0.4 and 0.41 of a bin's cpu go two to a bin, where the LP fills a bin with 2.5 of them (and no item is
    /// over half a bin, nor are the sizes one multiple of a common step): the dual-feasible function f_2 counts each as
    /// half a bin, so the bound is the optimum.
    /// </summary>
    [Fact]
    public void ItemsThatGoTwoToABinAreBoundedByHalfABinEach()
    {
        var bin = new BinType(0, "ten", Demand.Node(10_000, 10 * GiB), 0.1m);
        var items = Enumerable.Range(0, 10).Select(i => new PackItem(i, new Demand(i % 2 == 0 ? 4_000 : 4_100, GiB), 0)).ToList();
        var p = Problem(items, [bin]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.Equal(0.5m, s.Cost);
        Assert.Equal(0.5m, s.LowerBound);   // the LP alone: 40,500 / 10,000 bins, 0.405
    }

    /// <summary>
    /// Six anti-affine pods that only the dear class holds need six of its nodes, which the LP packs into two and a
    /// quarter: with the group's constraint in the LP, part of the dear class's price goes to the group, and the bound
    /// rises above the LP (0.18 $/h), the six nodes alone (0.12) and the dual-feasible functions, staying below the plan.
    /// </summary>
    [Fact]
    public void AnAntiAffinityGroupThatNeedsItsOwnNodesLiftsTheBound()
    {
        var big = new BinType(0, "big", Demand.Node(16_000, 64 * GiB), 0.02m);
        var small = new BinType(1, "small", Demand.Node(1_900, 4 * GiB), 0.001m);
        var items = Enumerable.Range(0, 6).Select(i => new PackItem(i, new Demand(6_000, 8 * GiB), 0, AntiAffinityGroup: 1))
            .Concat(Enumerable.Range(6, 1000).Select(i => new PackItem(i, new Demand(250, 400L << 20), 0))).ToList();
        var p = Problem(items, [big, small]);
        var s = Packer.Solve(p);
        AssertValid(p, s);
        Assert.True(s.LowerBound > 0.2m, $"bound {s.LowerBound}");
        Assert.True(s.LowerBound <= s.Cost, $"bound {s.LowerBound} above the plan {s.Cost}");
    }

    [Fact]
    public void MaxCountIsRespectedAndExhaustionIsReported()
    {
        var capped = Small with { MaxCount = 1 };
        var items = Enumerable.Range(0, 4).Select(i => new PackItem(i, new Demand(4000, 8 * GiB), 0)).ToList();
        var s = Packer.Solve(Problem(items, [capped]));
        Assert.Single(s.NewBins);
        Assert.Equal(3, s.Unplaced.Count);
        Assert.All(s.Unplaced, u => Assert.StartsWith("every class that may hold it is at its maximum count", u.Reason));
    }

    [Fact]
    public void DemandHelpers()
    {
        var a = new Demand(1500, 3 * GiB);
        Assert.Equal(new Demand(3000, 6 * GiB, 0, 2), a + a);
        Assert.Equal(Demand.Zero, a - a);
        Assert.Equal(new Demand(4500, 9 * GiB, 0, 3), a * 3);
        Assert.True(a.FitsIn(Small.Capacity));
        Assert.Equal(5, a.CopiesIn(Small.Capacity));
        Assert.Equal(1500.0 / 7650, a.ShareOf(Small.Capacity), 9);
        Assert.Equal(double.PositiveInfinity, new Demand(1, 1, 1).ShareOf(Small.Capacity));
    }
}
