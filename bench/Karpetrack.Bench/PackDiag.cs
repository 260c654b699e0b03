using System.Diagnostics;

namespace Karpetrack.Bench;

internal static class PackDiag
{
    public static void Run()
    {
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(Report.RepoRoot(), "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "bench");
        foreach (var region in new[] { "us-east-iad-1", "us-west-sjc-1" })
        foreach (int n in new[] { 1000, 10000 })
        {
            var types = PackingBench.SpotTypes(book, region);
            var p = PackingBench.Problem(types, PackingBench.Mix(n, 42 + n));
            var sw = Stopwatch.StartNew();
            var x = new Instance(p); double tInst = sw.Elapsed.TotalMilliseconds;
            var d = DualBound.Compute(x); double tLb = sw.Elapsed.TotalMilliseconds;
            var st = new State(x, d); st.FillExisting(); st.Greedy(new PackingOptions());
            var g = st.ToSolution("g"); double tG = sw.Elapsed.TotalMilliseconds;
            st.LocalSearch(new PackingOptions()); var l = st.ToSolution("l"); double tL = sw.Elapsed.TotalMilliseconds;
            double c = p.Items.Sum(i => (double)i.Demand.CpuMilli), m = p.Items.Sum(i => (double)i.Demand.MemoryBytes);
            var simple = types.Where(t => t.Name.StartsWith("gp.vs") && t.Name.Contains("2xlarge")).Select(t => (double)t.PricePerHour * Math.Max(c / t.Capacity.CpuMilli, m / t.Capacity.MemoryBytes)).Single();
            Console.WriteLine($"{region} {n}: shapes {x.S} inst {tInst:F1} lb {tLb - tInst:F1} greedy {tG - tLb:F1} ls {tL - tG:F1} ms; LB {d.Reported:F4} simple-gp2xl {simple:F4}; greedy {g.Cost} ({g.NewBins.Count}) ls {l.Cost} ({l.NewBins.Count}) unplaced {l.Unplaced.Count}");
            foreach (var grp in l.NewBins.GroupBy(b => b.Type.Name)) Console.WriteLine($"   {grp.Key} x{grp.Count()} cpu {grp.Average(b => (double)b.Used.CpuMilli / b.Type.Capacity.CpuMilli):P0} mem {grp.Average(b => (double)b.Used.MemoryBytes / b.Type.Capacity.MemoryBytes):P0}");
        }
    }
}
