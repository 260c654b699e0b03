using Xunit.Abstractions;
using static Karpetrack.Tests.Recommend.Packing.PackingInstances;

namespace Karpetrack.Tests.Recommend.Packing;

/// <summary>
/// The configuration LP by column generation: its bound (Farley's) is never above a feasible plan nor above the proven
/// optimum, and the plan built from it is valid and never dearer than the packer without it.
/// </summary>
public class ColumnGenerationTests(ITestOutputHelper output)
{
    /// <summary>
    /// Small random instances (3-12 items; constraint classes, existing capacity and anti-affinity on some), where the
    /// configuration LP is close to the optimum, so that a bound a little too high would show: never above the optimum
    /// our exhaustive search proves, and above the resource LP's bound on some of them.
    /// </summary>
    [Fact]
    public void TheConfigurationBoundIsNeverAboveTheProvenOptimum()
    {
        int proven = 0, higher = 0;
        for (int seed = 0; seed < 60; seed++)
        {
            var p = RandomProblem(9000 + seed, 3 + seed % 10, 2 + seed % 3, constraints: seed % 2 == 1, existing: seed % 5 == 0, antiAffinity: seed % 3 == 0);
            var exact = Packer.Exact(p, TimeSpan.FromSeconds(2));
            AssertValid(p, exact);
            if (!exact.ProvenOptimal) continue;
            proven++;
            var cg = Packer.ConfigurationBound(p);
            Assert.True(cg <= exact.Cost, $"seed {seed}: configuration bound {cg} above the optimum {exact.Cost}");
            if (cg > Packer.LowerBound(p)) higher++;
        }
        output.WriteLine($"{proven} of 60 proven; the configuration bound above the resource LP's on {higher}");
        Assert.True(proven >= 50, $"only {proven} of 60 proven");
        Assert.True(higher >= 5, $"the configuration bound was higher on only {higher} instances");
    }

    /// <summary>
    /// Instances of 200-700 items, where Solve runs the column generation: its plan is valid, places as many items and
    /// costs no more than Solve without it, and its bound is no lower and never above its own plan.
    /// </summary>
    [Fact]
    public void ThePlanIsValidAndNeverDearerThanWithoutColumnGeneration()
    {
        int cheaper = 0;
        for (int seed = 0; seed < 12; seed++)
        {
            var p = RandomProblem(9500 + seed, 200 + seed * 45, 3 + seed % 4, constraints: seed % 2 == 0, existing: seed % 3 == 0, antiAffinity: seed % 3 == 1);
            var without = Packer.Solve(p, new PackingOptions { ColumnGenerationItems = 0 });
            var with = Packer.Solve(p);
            AssertValid(p, with);
            Assert.True(with.Unplaced.Count <= without.Unplaced.Count, $"seed {seed}: {with.Unplaced.Count} unplaced against {without.Unplaced.Count}");
            Assert.True(with.Cost <= without.Cost, $"seed {seed}: {with.Cost} against {without.Cost} without column generation");
            Assert.True(with.LowerBound >= without.LowerBound, $"seed {seed}: bound {with.LowerBound} below {without.LowerBound}");
            if (with.Unplaced.Count == 0) Assert.True(with.LowerBound <= with.Cost, $"seed {seed}: bound {with.LowerBound} above the plan {with.Cost}");
            Assert.True(Packer.ConfigurationBound(p) <= without.Cost || without.Unplaced.Count > 0);
            // The two bounds behind LowerBound, carried by the solution: the resource LP's (at least the ascent's alone: Solve may
            // also solve it exactly), and the configuration LP's where it ran.
            Assert.True(with.ResourceBound >= Packer.LowerBound(p), $"seed {seed}: resource bound {with.ResourceBound} below the ascent's {Packer.LowerBound(p)}");
            Assert.Equal(with.ResourceBound, without.ResourceBound);
            Assert.Equal(0, without.ConfigurationBound);
            Assert.Equal(Math.Max(with.ResourceBound, with.Unplaced.Count == 0 ? Math.Min(with.ConfigurationBound, with.Cost) : with.ConfigurationBound), with.LowerBound);
            if (with.Cost < without.Cost) cheaper++;
            output.WriteLine($"seed {seed}: {p.Items.Count} items: {without.Cost} → {with.Cost} ({with.Strategy}); bound {without.LowerBound} → {with.LowerBound}");
        }
        output.WriteLine($"cheaper on {cheaper} of 12");
    }

    /// <summary>The LP's own plan, before the best of the two is taken: valid on its own (every item once, capacities, constraints, anti-affinity).</summary>
    [Fact]
    public void TheLpPlanAloneIsValid()
    {
        int built = 0;
        for (int seed = 0; seed < 10; seed++)
        {
            var p = RandomProblem(9700 + seed, 150 + seed * 30, 2 + seed % 4, constraints: seed % 2 == 1, existing: seed % 4 == 0, antiAffinity: seed % 2 == 0);
            var x = new PackingInstance(p);
            var o = new PackingOptions();
            var plan = ColumnPlan.Build(x, DualBound.Compute(x), o, new ColumnGeneration.Budget());
            if (plan is null) continue;
            built++;
            AssertValid(p, plan);
            Assert.Equal(p.Items.Count, plan.NewBins.Sum(b => b.Items.Count) + plan.OnExisting.Count + plan.Unplaced.Count);
        }
        Assert.True(built >= 8, $"only {built} of 10 plans built");
    }
}
