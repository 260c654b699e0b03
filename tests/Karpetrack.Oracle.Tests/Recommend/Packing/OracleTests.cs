using Google.OrTools.Sat;
using Xunit.Abstractions;
using Glop = Google.OrTools.LinearSolver;

namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>
/// The packer checked against a solver that shares none of its code: CP-SAT for exact optima of small instances (our
/// own exact search starts from Solve's answer and prunes with our dual bound, so a bound that is too high would
/// certify the heuristic), GLOP for the LP relaxation our dual bound is the dual of. The models below are written from
/// the problem's definition only: every item once, each bin within its capacity in every dimension, the constraint
/// class's allowed types and existing bins, anti-affine items apart, MaxCount, cost = the new bins' prices.
/// </summary>
public class OracleTests(ITestOutputHelper output)
{
    private const long GiB = 1L << 30;

    /// <summary>Solve with the resource LP solved exactly whatever the size and the plan's gap (from 200 items and 2 % + one node in the product).</summary>
    private static readonly PackingOptions ExactLpAlways = new() { ExactLpMinItems = 0, ExactLpGoal = -1 };

    /// <summary>Prices of the test instances have at most six decimals: costs in millionths are exact.</summary>
    private static long Micro(decimal price) => (long)(price * 1_000_000m);

    private sealed record BinSlot(Demand Capacity, long Price, BinType? Type, ExistingBin? Existing);

    private static bool MayGo(PackingProblem p, PackItem it, BinSlot b) =>
        b.Type is { } t ? p.TypeAllows(it.Constraint, t) && it.Demand.FitsIn(t.Capacity)
                        : p.BinAllows(it.Constraint, b.Existing!) && it.Demand.FitsIn(b.Existing!.Free);

    private static List<BinSlot> Slots(PackingProblem p, int items)
    {
        var slots = p.Existing.Select(e => new BinSlot(e.Free, 0, null, e)).ToList();
        foreach (var t in p.Types)
            for (int k = 0; k < Math.Min(items, t.MaxCount); k++) slots.Add(new BinSlot(t.Capacity, Micro(t.PricePerHour), t, null));
        return slots;
    }

    /// <summary>Items some bin may take: the packer reports the others unplaced and prices only the rest.</summary>
    private static List<PackItem> Placeable(PackingProblem p, List<BinSlot> slots) => p.Items.Where(it => slots.Any(b => MayGo(p, it, b))).ToList();

    /// <summary>
    /// The optimum cost in millionths of a dollar per hour by CP-SAT; null when it proves nothing within its limit, or
    /// when no plan places every item (some fit only existing nodes that cannot take them all).
    /// </summary>
    private static long? CpSatOptimum(PackingProblem p)
    {
        var slots = Slots(p, p.Items.Count);
        var items = Placeable(p, slots);
        var model = new CpModel();
        var used = new BoolVar?[slots.Count];
        for (int b = 0; b < slots.Count; b++) if (slots[b].Type is not null) used[b] = model.NewBoolVar($"y{b}");
        var x = new Dictionary<(int, int), BoolVar>();
        for (int i = 0; i < items.Count; i++)
        {
            var choices = new List<ILiteral>();
            for (int b = 0; b < slots.Count; b++)
                if (MayGo(p, items[i], slots[b])) choices.Add(x[(i, b)] = model.NewBoolVar($"x{i}_{b}"));
            model.AddExactlyOne(choices);
        }
        for (int b = 0; b < slots.Count; b++)
        {
            var inside = Enumerable.Range(0, items.Count).Where(i => x.ContainsKey((i, b))).ToList();
            if (inside.Count == 0) { if (used[b] is { } unused) model.Add(unused == 0); continue; }
            var cap = slots[b].Capacity;
            long[] capacity = [cap.CpuMilli, cap.MemoryBytes, cap.Gpu, cap.Pods];
            for (int r = 0; r < 4; r++)
            {
                var load = LinearExpr.WeightedSum(inside.Select(i => x[(i, b)]), inside.Select(i => Dim(items[i].Demand, r)));
                if (used[b] is { } y) model.Add(load <= LinearExpr.Term(y, capacity[r]));
                else model.Add(load <= capacity[r]);
            }
            foreach (var group in inside.Where(i => items[i].AntiAffinityGroup >= 0).GroupBy(i => items[i].AntiAffinityGroup))
                model.AddAtMostOne(group.Select(i => (ILiteral)x[(i, b)]));
        }
        // Bins of one type are interchangeable: the k+1st is used only when the kth is.
        for (int b = 1; b < slots.Count; b++)
            if (used[b] is { } later && used[b - 1] is { } earlier && ReferenceEquals(slots[b].Type, slots[b - 1].Type))
                model.AddImplication(later, earlier);
        var paid = Enumerable.Range(0, slots.Count).Where(b => used[b] is not null).ToList();
        model.Minimize(LinearExpr.WeightedSum(paid.Select(b => used[b]!), paid.Select(b => slots[b].Price)));
        var solver = new CpSolver { StringParameters = "num_workers:1,random_seed:1,max_time_in_seconds:20" };
        return solver.Solve(model) == CpSolverStatus.Optimal ? (long)Math.Round(solver.ObjectiveValue) : null;
    }

    private static long Dim(Demand d, int r) => r switch { 0 => d.CpuMilli, 1 => d.MemoryBytes, 2 => d.Gpu, _ => d.Pods };

    /// <summary>
    /// The LP relaxation by GLOP, in dollars per hour: each item split over the new bin types it may use, each type
    /// bought fractionally (at most MaxCount), no existing bins. With <paramref name="roundDown"/> every capacity is
    /// first rounded down to a multiple of the gcd of the demands in its dimension, which no packing can exceed.
    /// </summary>
    private static double GlopBound(PackingProblem p, bool roundDown)
    {
        var items = p.Items.Where(it => p.Types.Any(t => p.TypeAllows(it.Constraint, t) && it.Demand.FitsIn(t.Capacity))).ToList();
        var gcd = Gcds(p);
        using var solver = Glop.Solver.CreateSolver("GLOP");
        var buy = p.Types.Select(t => solver.MakeNumVar(0, t.MaxCount == int.MaxValue ? double.PositiveInfinity : t.MaxCount, $"y{t.Id}")).ToArray();
        var rows = new Glop.Constraint[p.Types.Count, 4];
        for (int t = 0; t < p.Types.Count; t++)
            for (int r = 0; r < 4; r++)
            {
                long cap = Dim(p.Types[t].Capacity, r);
                if (roundDown && gcd[r] > 1) cap = cap / gcd[r] * gcd[r];
                rows[t, r] = solver.MakeConstraint(double.NegativeInfinity, 0);
                rows[t, r].SetCoefficient(buy[t], -Scaled(cap, r));
            }
        foreach (var it in items)
        {
            var once = solver.MakeConstraint(1, 1);
            for (int t = 0; t < p.Types.Count; t++)
            {
                if (!p.TypeAllows(it.Constraint, p.Types[t]) || !it.Demand.FitsIn(p.Types[t].Capacity)) continue;
                var z = solver.MakeNumVar(0, 1, "");
                once.SetCoefficient(z, 1);
                for (int r = 0; r < 4; r++) rows[t, r].SetCoefficient(z, Scaled(Dim(it.Demand, r), r));
            }
        }
        var cost = solver.Objective();
        for (int t = 0; t < p.Types.Count; t++) cost.SetCoefficient(buy[t], (double)p.Types[t].PricePerHour);
        cost.SetMinimization();
        Assert.Equal(Glop.Solver.ResultStatus.OPTIMAL, solver.Solve());
        return cost.Value();
    }

    /// <summary>Per dimension, the gcd of the demands of the items some type takes.</summary>
    private static long[] Gcds(PackingProblem p)
    {
        var gcd = new long[4];
        foreach (var it in p.Items.Where(it => p.Types.Any(t => p.TypeAllows(it.Constraint, t) && it.Demand.FitsIn(t.Capacity))))
            for (int r = 0; r < 4; r++) gcd[r] = Gcd(gcd[r], Dim(it.Demand, r));
        return gcd;
    }

    private static double Scaled(long amount, int r) => r == 1 ? amount / (double)GiB : r == 0 ? amount / 1000.0 : amount;

    private static long Gcd(long a, long b)
    {
        while (b != 0) (a, b) = (b, a % b);
        return Math.Abs(a);
    }

    private static decimal Dollars(long micro) => micro / 1_000_000m;

    /// <summary>
    /// Small random instances (up to 12 items, 2-4 types; constraint classes, existing nodes and anti-affinity on some):
    /// the bound is never above CP-SAT's optimum, Solve's plan is valid and never below it, and our exact search proves
    /// the same optimum.
    /// </summary>
    [Fact]
    public void TheBoundSolveAndTheExactSearchAgreeWithCpSatOnSmallInstances()
    {
        int solved = 0, solveOptimal = 0;
        decimal worstGap = 0, boundShare = 0;
        for (int seed = 0; seed < 60; seed++)
        {
            var p = PackingInstances.RandomProblem(5000 + seed, 4 + seed % 9, 2 + seed % 3, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 4 == 1);
            var optimum = CpSatOptimum(p);
            if (optimum is not { } micro) continue;
            solved++;
            var opt = Dollars(micro);
            var bound = Packer.LowerBound(p);
            Assert.True(bound <= opt, $"seed {seed}: our bound {bound} is above CP-SAT's optimum {opt}");
            var exactLp = Packer.Solve(p, ExactLpAlways).ResourceBound;
            Assert.True(exactLp <= opt, $"seed {seed}: our bound with the exact LP {exactLp} is above CP-SAT's optimum {opt}");
            var s = Packer.Solve(p);
            PackingInstances.AssertValid(p, s);
            Assert.Equal(bound, s.LowerBound);
            Assert.True(s.Cost >= opt, $"seed {seed}: Solve's {s.Cost} is below CP-SAT's optimum {opt}: one of the two models is wrong");
            if (s.Cost == opt) solveOptimal++;
            if (opt > 0) { worstGap = Math.Max(worstGap, s.Cost / opt - 1); boundShare += bound / opt; }
            var exact = Packer.Exact(p, TimeSpan.FromSeconds(2));
            PackingInstances.AssertValid(p, exact);
            if (exact.ProvenOptimal) Assert.True(exact.Cost == opt, $"seed {seed}: our exact search proved {exact.Cost}, CP-SAT {opt}");
            Assert.True(exact.Cost >= opt);
        }
        output.WriteLine($"CP-SAT proved {solved} of 60; Solve optimal on {solveOptimal}, worst {worstGap:P1} above; bound / optimum {boundShare / Math.Max(1, solved):P1} on average");
        Assert.True(solved >= 55, $"CP-SAT proved only {solved} of 60");
    }

    /// <summary>
    /// Anti-affinity groups that hold most items (the group's nodes are then most of the cost, which our bound's
    /// anti-affinity term prices): the bound stays below CP-SAT's optimum and Solve's plan valid and not below it.
    /// </summary>
    [Fact]
    public void TheBoundStaysBelowCpSatWithLargeAntiAffinityGroups()
    {
        int solved = 0;
        for (int seed = 0; seed < 20; seed++)
        {
            var random = PackingInstances.RandomProblem(7000 + seed, 6 + seed % 6, 2 + seed % 3, constraints: seed % 2 == 0);
            var items = random.Items.Select((it, i) => it with { AntiAffinityGroup = i % 5 < 3 ? 0 : i % 5 == 3 ? 1 : -1 }).ToList();
            var p = PackingInstances.Problem(items, random.Types, random.Existing, random.TypeAllows, random.BinAllows);
            if (CpSatOptimum(p) is not { } micro) continue;
            solved++;
            var opt = Dollars(micro);
            var s = Packer.Solve(p);
            PackingInstances.AssertValid(p, s);
            Assert.True(s.LowerBound <= opt, $"seed {seed}: our bound {s.LowerBound} is above CP-SAT's optimum {opt}");
            var exactLp = Packer.Solve(p, ExactLpAlways).ResourceBound;
            Assert.True(exactLp <= opt, $"seed {seed}: our bound with the exact LP {exactLp} is above CP-SAT's optimum {opt}");
            Assert.True(s.Cost >= opt, $"seed {seed}: Solve's {s.Cost} is below CP-SAT's optimum {opt}");
        }
        Assert.True(solved >= 16, $"CP-SAT proved only {solved} of 20");
    }

    /// <summary>
    /// The configuration LP's bound (column generation, Farley's bound) on small random instances, with constraint
    /// classes, existing nodes and anti-affinity groups large and small: never above CP-SAT's optimum. It is close to the
    /// optimum on such instances (whole items per pattern), so a pricing bound that is too low would show here.
    /// </summary>
    [Fact]
    public void TheConfigurationBoundStaysBelowCpSat()
    {
        int solved = 0;
        decimal share = 0;
        for (int seed = 0; seed < 50; seed++)
        {
            var random = PackingInstances.RandomProblem(8000 + seed, 4 + seed % 9, 2 + seed % 3, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 4 == 1);
            var p = seed % 5 != 4 ? random : PackingInstances.Problem(
                random.Items.Select((it, i) => it with { AntiAffinityGroup = i % 5 < 3 ? 0 : i % 5 == 3 ? 1 : -1 }).ToList(),
                random.Types, random.Existing, random.TypeAllows, random.BinAllows);
            if (CpSatOptimum(p) is not { } micro) continue;
            solved++;
            var opt = Dollars(micro);
            var cg = Packer.ConfigurationBound(p);
            Assert.True(cg <= opt, $"seed {seed}: the configuration bound {cg} is above CP-SAT's optimum {opt}");
            if (opt > 0) share += cg / opt;
        }
        output.WriteLine($"CP-SAT proved {solved} of 50; configuration bound / optimum {share / Math.Max(1, solved):P1} on average");
        Assert.True(solved >= 45, $"CP-SAT proved only {solved} of 50");
    }

    /// <summary>
    /// Our bound against GLOP's optimum of the LP relaxation our dual ascent works on, on instances large and small (no
    /// existing nodes, no anti-affinity): never more than 0.1 % below it, the ascent stopping short (with capacities rounded
    /// down to the demands' gcd, as ours are), above it only by the integrality terms (items that cannot share a bin,
    /// dual-feasible functions), and both below every feasible plan.
    /// </summary>
    [Fact]
    public void TheBoundIsAtLeastTheLpBoundGlopFinds()
    {
        double worst = double.PositiveInfinity, sum = 0;
        int above = 0;
        for (int seed = 0; seed < 40; seed++)
        {
            var p = PackingInstances.RandomProblem(6000 + seed, 10 + seed * 12, 2 + seed % 5, constraints: seed % 2 == 0);
            var ours = (double)Packer.LowerBound(p);
            var lp = GlopBound(p, roundDown: false);
            var lpRounded = GlopBound(p, roundDown: true);
            var s = Packer.Solve(p);
            PackingInstances.AssertValid(p, s);
            output.WriteLine($"seed {seed}: {p.Items.Count} items, {p.Types.Count} types: ours {ours:F6}, GLOP {lp:F6} (capacities rounded to the gcd {lpRounded:F6}), Solve {s.Cost}");
            Assert.True(lp <= lpRounded + 1e-9);
            Assert.True(lpRounded <= (double)s.Cost + 1e-9, $"seed {seed}: GLOP's bound {lpRounded} above a feasible plan {s.Cost}");
            Assert.True(ours <= (double)s.Cost, $"seed {seed}: our bound {ours} above a feasible plan {s.Cost}");
            double ratio = ours / Math.Max(lpRounded, 1e-12);
            if (ratio > 1 + 1e-6) above++;
            worst = Math.Min(worst, ratio);
            sum += ratio;
            Assert.True(ratio >= 0.999, $"seed {seed}: our bound {ours} is {1 - ratio:P4} below GLOP's {lpRounded}");
        }
        output.WriteLine($"ours / GLOP (rounded capacities): worst {worst:P2}, mean {sum / 40:P2}; above it on {above} of 40");
    }

    /// <summary>
    /// Instances shaped like the provisioning family's pinned rows: twelve node classes in three categories (1.875, 3.75 and
    /// 7.5 GiB per core; 2-16 cores, less a reservation), the small ones cheap per core on some seeds, and 600-1,400 pods
    /// of distinct sizes, 30 % of them pinned (to one category, or away from the compute-heavy one). More distinct
    /// shapes than the bound's 300 demand groups, and constraint classes that split the demand: where the dual ascent's
    /// groups (each at its members' least demand) lose 2-5 % of the LP. The bound Solve reports (exact LP, no floor cuts)
    /// is GLOP's LP optimum to 0.25 % (the prices come from groups at their mean demand), and below every feasible plan.
    /// </summary>
    [Fact]
    public void TheExactLpBoundIsGlopsLpOptimumOnPinnedInstances()
    {
        var options = new PackingOptions { FloorCutMinItems = int.MaxValue, ExactLpGoal = -1, ColumnGenerationMinItems = int.MaxValue };
        const double Tolerance = 0.0025;
        var below = new List<string>();
        double worst = double.PositiveInfinity, worstAscent = double.PositiveInfinity;
        for (int seed = 0; seed < 8; seed++)
        {
            var p = PinnedProblem(9100 + seed, 2000 + 600 * seed, cheapSmall: seed % 2 == 0);
            var lp = GlopBound(p, roundDown: true);
            var s = Packer.Solve(p, options);
            PackingInstances.AssertValid(p, s);
            double ours = (double)s.ResourceBound, ascent = (double)Packer.LowerBound(p);
            output.WriteLine($"seed {seed}: {p.Items.Count} items: GLOP {lp:F6}, ours {ours:F6} ({ours / lp:P3}), the ascent alone {ascent:F6} ({ascent / lp:P3}), plan {s.Cost}");
            Assert.True(ours <= (double)s.Cost, $"seed {seed}: our bound {ours} above a feasible plan {s.Cost}");
            // No cuts, no anti-affinity here: our LP bound is one of GLOP's LP's dual values, never above its optimum.
            Assert.True(ours <= lp * (1 + 1e-6), $"seed {seed}: our bound {ours} above GLOP's LP optimum {lp}");
            if (ours < lp * (1 - Tolerance)) below.Add($"seed {seed}: our bound {ours} is {1 - ours / lp:P3} below GLOP's LP optimum {lp}");
            worst = Math.Min(worst, ours / lp);
            worstAscent = Math.Min(worstAscent, ascent / lp);
        }
        output.WriteLine($"ours / GLOP: worst {worst:P3}; the ascent alone: worst {worstAscent:P3}");
        Assert.True(below.Count == 0, string.Join("; ", below));
    }

    /// <summary>See <see cref="TheExactLpBoundIsGlopsLpOptimumOnPinnedInstances"/>.</summary>
    private static PackingProblem PinnedProblem(int seed, int items, bool cheapSmall)
    {
        var rng = new Random(seed);
        var types = new List<BinType>();
        double[] perCore = [1.875, 3.75, 7.5];
        string[] names = ["ch", "gp", "mh"];
        for (int c = 0; c < 3; c++)
            foreach (int size in new[] { 2, 4, 8, 16 })
            {
                decimal price = Math.Round((decimal)(size * (0.004 + 0.0012 * perCore[c]) * (0.8 + 0.4 * rng.NextDouble())), 6);
                if (cheapSmall && size == 4) price = Math.Round(price / 3, 6);
                types.Add(new BinType(types.Count, $"{names[c]}{size}", Demand.Node(size * 1000L - 100, (long)(size * perCore[c] * 0.95 * GiB), 0, 110), price));
            }
        int[] cores = [250, 500, 1000, 2000, 4000, 8000], weights = [30, 25, 20, 15, 7, 3], gibPerCore = [1, 2, 2, 4, 4, 4, 8];
        var list = new List<PackItem>();
        for (int i = 0; i < items; i++)
        {
            // The family's pods: cores 0.25-8 (most small), memory 1-8 GiB per core ± 40 %.
            int pick = rng.Next(100), k = 0;
            while (pick >= weights[k]) pick -= weights[k++];
            long cpu = cores[k];
            long mem = (long)(cpu / 1000.0 * gibPerCore[rng.Next(gibPerCore.Length)] * GiB * (0.6 + 0.8 * rng.NextDouble()));
            double u = rng.NextDouble();
            int con = u < 0.7 ? 0 : u < 0.85 ? 1 + rng.Next(3) : 4;
            list.Add(new PackItem(i, new Demand(cpu, mem), con));
        }
        // Class 0 anywhere; 1-3 pinned to ch, gp or mh (a nodeSelector); 4 anywhere but ch (required node affinity).
        return PackingInstances.Problem(list, types, [], (c, t) => c == 0 || (c == 4 ? t.Id >= 4 : t.Id / 4 == c - 1));
    }
}
