using System.Diagnostics;

namespace Karpetrack.Bench;

/// <summary>
/// The packing goals of perf-anchors.md §8 on real Spot classes and prices (2026-08-17 snapshot) and the §5 request
/// mix: speed at 10k and 100k pods, cost against the dual lower bound and karpetrack's three strategies.
/// </summary>
internal static class PackingBench
{
    private const string Section = "packing";
    private static readonly string[] Regions = ["us-east-iad-1", "us-west-sjc-1"];

    public static void Run(Report report)
    {
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(Report.RepoRoot(), "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "bench");
        foreach (var region in Regions)
        {
            var types = SpotTypes(book, region);
            Console.WriteLine($"packing, {region}: {types.Count} classes");
            foreach (int n in new[] { 1_000, 10_000 })
            {
                var p = Problem(types, Mix(n, seed: 42 + n));
                var s = Packer.Solve(p);
                var baselines = new[] { Packer.FirstFitDecreasing(p), Packer.BestFit(p), Packer.SingleLargeNode(p) };
                var complete = baselines.Where(b => b.Unplaced.Count <= s.Unplaced.Count).ToList();
                decimal bestBase = complete.Count > 0 ? complete.Min(b => b.Cost) : decimal.MaxValue;
                double gap = (double)(s.Cost / s.LowerBound) - 1;
                report.Row(Section, $"{region}, {n:N0} pods: cost vs lower bound ({s.NewBins.Count} nodes, ${s.Cost}/h, bound ${s.LowerBound:F4}/h)", "≤ 5 % above",
                    $"{gap:P2} above{(s.Unplaced.Count > 0 ? $", {s.Unplaced.Count} pods fit no class" : "")}", gap <= 0.05);
                string each = string.Join(", ", baselines.Select(b => $"{Short(b.Strategy)} ${b.Cost}/h{(b.Unplaced.Count > 0 ? $" ({b.Unplaced.Count} unplaced)" : "")}"));
                report.Row(Section, $"{region}, {n:N0} pods: cost vs karpetrack's strategies ({each})", "never worse than the best",
                    bestBase == decimal.MaxValue ? "no baseline completed" : $"{(double)(s.Cost / bestBase) - 1:P1} vs the best", s.Cost <= bestBase);
            }
            foreach (var (n, goal) in new[] { (10_000, 50.0), (100_000, 500.0) })
            {
                var p = Problem(types, Mix(n, seed: 7 + n));
                var times = new List<double>();
                PackingSolution? last = null;
                for (int run = 0; run < (n > 50_000 ? 5 : 9); run++)
                {
                    var sw = Stopwatch.StartNew();
                    last = Packer.Solve(p);
                    times.Add(sw.Elapsed.TotalMilliseconds);
                }
                times.Sort();
                double p50 = Report.Percentile(times, 0.5);
                report.Row(Section, $"{region}, Solve of {n:N0} pods × {types.Count} classes, one thread ({last!.NewBins.Count} nodes, {(double)(last.Cost / last.LowerBound) - 1:P1} above bound)", $"≤ {goal:F0} ms",
                    $"p50 {p50:F1} ms (min {times[0]:F1}, max {times[^1]:F1})", p50 <= goal);
            }
        }
    }

    private static string Short(string strategy) => strategy.Replace("karpetrack ", "", StringComparison.Ordinal);

    /// <summary>Biddable Spot classes of a region: no bare metal, no GPU; min bid 0.01; capacity minus reserve and DaemonSets.</summary>
    internal static List<BinType> SpotTypes(PriceBook book, string region)
    {
        var list = new List<BinType>();
        foreach (var c in book.Classes.Values.Where(c => c.Class.Region == region && c.Class.Category is not ("bm" or "gpu")).OrderBy(c => c.Class.Name, StringComparer.Ordinal))
        {
            decimal price = (c.Prices with { MinBid = 0.01m }).SpotPrice;
            long cpu = (long)(c.Class.Cpu * 1000) - 100 - 250;
            long mem = (long)(c.Class.MemoryBytes * 0.95) - 256L * 1024 * 1024;
            list.Add(new BinType(list.Count, c.Class.Name, Demand.Node(cpu, mem, 0, 110 - 2), price));
        }
        return list;
    }

    /// <summary>perf-anchors.md §5: CPU 0.25/0.5/1/2/4/8 cores at 30/25/20/15/7/3 %, memory = CPU × {1,2,2,4,4,4,8} GiB × U(0.6, 1.4).</summary>
    internal static List<PackItem> Mix(int n, int seed)
    {
        var rng = new Random(seed);
        long[] cpus = [250, 500, 1000, 2000, 4000, 8000];
        int[] weights = [30, 25, 20, 15, 7, 3];
        int[] perCore = [1, 2, 2, 4, 4, 4, 8];
        var items = new List<PackItem>(n);
        for (int i = 0; i < n; i++)
        {
            int roll = rng.Next(100), k = 0;
            while (roll >= weights[k]) { roll -= weights[k]; k++; }
            double gib = cpus[k] / 1000.0 * perCore[rng.Next(perCore.Length)] * (0.6 + 0.8 * rng.NextDouble());
            items.Add(new PackItem(i, new Demand(cpus[k], (long)(gib * 1073741824)), 0));
        }
        return items;
    }

    internal static PackingProblem Problem(List<BinType> types, List<PackItem> items) => new()
    {
        Items = items,
        Types = types,
        TypeAllows = (_, _) => true,
        BinAllows = (_, _) => true,
    };
}
