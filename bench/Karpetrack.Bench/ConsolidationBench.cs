using System.Diagnostics;

namespace Karpetrack.Bench;

/// <summary>
/// Issue 17, goal 3: consolidation and replacement quality. The plan's cost after every recommendation against what
/// consolidation could reach with the blockers holding (<see cref="ConsolidationBound"/>): split into the nodes the
/// blockers keep, the bound's own slack (a free repack of the movable pods) and the plan's shortfall per method; on
/// the 5,000-node synthetic cluster and on seeded underused clusters with blockers.
/// </summary>
internal static class ConsolidationBench
{
    private const string Section = "consolidation";

    /// <summary>The 5,000-node / 150,000-pod cluster: the scan's time and the split of its gap.</summary>
    public static void RunBig(SyntheticData data, Report report)
    {
        var book = RecommenderBench.Book();
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        var model = RecommenderBench.Load(data);
        var snap = model.Snapshot();
        var pods = model.Pods();
        Recommender.Recommend(snap, pods, [], [], book, options);   // warm up, as a running service is
        var (plan, wall, cpu) = Timed(() => Recommender.Recommend(snap, pods, [], [], book, options));
        var counts = string.Join(", ", plan.Recommendations.GroupBy(r => r.Type).Select(g => $"{g.Count()} {g.Key}"));
        report.Row(Section, $"Every node of the {snap.Nodes.Length:N0}-node / {pods.Length:N0}-pod cluster evaluated for removal and replacement ({counts}; load {Load()})",
            "≤ 5 s", $"wall {wall:F2} s, CPU {cpu:F2} s", cpu <= 5);
        Split(report, $"{snap.Nodes.Length:N0}-node synthetic cluster", snap, pods, [], book, options, plan);
        GC.KeepAlive(model);
    }

    /// <summary>Seeded underused clusters with blockers: after-cost against the bound, and nodes left unexplained.</summary>
    public static void RunUnderused(Report report)
    {
        var book = RecommenderBench.Book();
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        foreach (var (nodes, seed) in new[] { (200, 1), (2_000, 2) })
        {
            var c = UnderusedCluster.Build(nodes, seed, book);
            var snap = c.Model.Snapshot();
            var pods = c.Model.Pods();
            var (plan, wall, cpu) = Timed(() => Recommender.Recommend(snap, pods, c.Pdbs, [], book, options));
            Split(report, $"underused {nodes:N0}-node cluster (seed {seed}, {c.Describe()}; plan in CPU {cpu:F2} s)", snap, pods, c.Pdbs, book, options, plan);
        }
    }

    private static void Split(Report report, string name, ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, PriceBook book, RecommenderOptions options, Plan plan)
    {
        var outlook = ClusterCosts.WithOutlook(plan, snap, pods, [], book, options).Costs!;
        var sw = Stopwatch.StartNew();
        var b = ConsolidationBound.Compute(snap, pods, pdbs, [], book, options, repack: true);
        var ms = sw.Elapsed.TotalMilliseconds;
        var today = outlook.TodayPerHour;
        decimal Saved(Func<Recommendation, bool> f) => plan.Recommendations.Where(f).Sum(r => r.SavingsPerHour);
        var single = Saved(r => r.Type == RecommendationType.DeleteEmpty || (r.Type == RecommendationType.Consolidate && r.Nodes.Count == 1));
        var multi = Saved(r => r.Type == RecommendationType.Consolidate && r.Nodes.Count > 1);
        var replace = Saved(r => r.Type == RecommendationType.Replace);
        var other = Saved(r => r.Type == RecommendationType.Provision);
        var after = outlook.AfterRecommendationsPerHour;
        static string Pct(decimal a, decimal b) => b > 0 ? $"{(double)((a - b) / b) * 100:F1} %" : "n/a";
        report.Row(Section, $"{name}: cost after every recommendation against the bound with the blockers holding (today {today:0.###} $/h; "
            + $"after one node at a time {today - single:0.###}, several together {today - single - multi:0.###}, replacements {today - single - multi - replace:0.###}"
            + (other != 0 ? $", provisioning {-other:0.###}" : "") + $" $/h; bound {b.BoundPerHour:0.###} $/h, {b.ExcludedPods} pods left out)",
            "≤ 10 % above", $"{Pct(after, b.BoundPerHour)} above", after <= b.BoundPerHour * 1.10m);
        report.Row(Section, $"{name}: where the gap lies. Blocked nodes {b.BlockedNodes:N0} of {snap.Nodes.Length:N0} ({b.BlockedPerHour:0.###} $/h, kept whatever the plan); "
            + $"free repack of the {b.MovablePods:N0} movable pods onto their free room and the allowed classes {b.RepackPerHour:0.###} $/h ({b.RepackUnplaced} unplaced); "
            + $"the same bound with the packer's own pricing of free room {b.PackerBoundPerHour:0.###} $/h; bound over all pods, blockers ignored (the cost outlook's) {outlook.LowerBoundPerHour:0.###} $/h; {b.NodeTypes} undominated nodes as bin types; bound and repack in {ms:F0} ms",
            "(info)", $"plan {Pct(after, b.RepackPerHour ?? 0)} above the repack; repack {Pct(b.RepackPerHour ?? 0, b.BoundPerHour)} above the bound; plan {Pct(after, outlook.LowerBoundPerHour)} above the blind bound", null);
        var removed = plan.Recommendations.SelectMany(r => r.Nodes).ToHashSet(StringComparer.Ordinal);
        if (Environment.GetEnvironmentVariable("CONSOL_DEBUG") == "1")   // where the cost that stays is: by class and blocker
        {
            foreach (var g in snap.Nodes.Where(n => !removed.Contains(n.Name)).GroupBy(n => (n.ServerClass, string.Join("+", plan.Blockers.GetValueOrDefault(n.Name)?.Select(x => x.Reason) ?? []))).OrderBy(g => g.Key.ServerClass))
                Console.WriteLine($"    kept {g.Key.ServerClass} [{g.Key.Item2}]: {g.Count()} nodes, util cpu {g.Average(n => n.Utilization(0)):P0} mem {g.Average(n => n.Utilization(1)):P0}, {g.Sum(n => book.NodePrice(n.ServerClass, n.CapacityType) ?? 0):0.###} $/h");
            foreach (var g in snap.Nodes.Where(n => removed.Contains(n.Name)).GroupBy(n => n.ServerClass).OrderBy(g => g.Key))
                Console.WriteLine($"    removed {g.Key}: {g.Count()} nodes");
            foreach (var g in plan.Recommendations.SelectMany(r => r.NewNodes.Select(nn => (r, nn))).GroupBy(x => x.nn.ServerClass).OrderBy(g => g.Key))
                Console.WriteLine($"    new {g.Key}: {g.Sum(x => x.nn.Count)} nodes, {g.Sum(x => x.nn.Count * x.nn.PricePerHour):0.###} $/h");
            {
                var pdbIndex = pdbs.GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray());
                var byNode = pods.Where(p => p.Node is not null).GroupBy(p => p.Node!).ToDictionary(g => g.Key, g => g.ToArray());
                var movable = new List<PodFacts>();
                foreach (var n in snap.Nodes)
                {
                    var on = byNode.GetValueOrDefault(n.Name) ?? [];
                    if (book.NodePrice(n.ServerClass, n.CapacityType) is null || Recommender.NodeBlockers(n, on, pdbIndex, book).Count > 0) continue;
                    movable.AddRange(on.Where(p => !p.IsOverhead && !p.Terminating));
                }
                var offers = Offers.For(snap, book, "us-east-iad-1", options, []);
                var si = new ShapeIndex(snap.Resources);
                var items = movable.Select((p, i) => si.Item(i, p)).ToList();
                var problem = si.Problem(items, offers, [], (_, _) => false);
                var sw2 = Stopwatch.StartNew();
                var lp = Packer.LowerBound(problem);
                var cg = Packer.ConfigurationBound(problem, new PackingOptions { ColumnTotalNodes = 2_000_000, ColumnIterations = 200, ColumnGroups = 400 });
                Console.WriteLine($"    no existing room: {movable.Count} pods, LP bound {lp:0.####}, configuration bound {cg:0.####} ({(double)(cg / lp - 1) * 100:F2} % higher; {sw2.ElapsedMilliseconds} ms)");
            }
            var podBy = pods.ToDictionary(p => (p.Namespace, p.Name));
            var offerCap = Offers.For(snap, book, "us-east-iad-1", options, []).ToDictionary(o => o.Bin.Name, o => o.Bin.Capacity);
            foreach (var g in plan.Recommendations.SelectMany(r => r.Moves.Where(m => m.To.Contains('#')).Select(m => (Class: m.To[..m.To.IndexOf('#')], Node: r.Id + m.To, Pod: podBy[(m.Namespace, m.Pod)])))
                .GroupBy(x => x.Class))
            {
                int bins = g.Select(x => x.Node).Distinct().Count();
                var cap = offerCap[g.Key];
                Console.WriteLine($"    new {g.Key} fill: {bins} nodes, cpu {g.Sum(x => (double)x.Pod.Requests[ResourceTable.Cpu]) / (bins * (double)cap.CpuMilli):P1}, mem {g.Sum(x => (double)x.Pod.Requests[ResourceTable.Memory]) / (bins * (double)cap.MemoryBytes):P1}, pods {g.Count() / (double)bins:F1}/node");
            }
            var classOf = snap.Nodes.ToDictionary(n => n.Name, n => n.ServerClass, StringComparer.Ordinal);
            foreach (var g in plan.Recommendations.SelectMany(r => r.Moves.Where(m => classOf.ContainsKey(m.To)).Select(m => (r, m.To))).Distinct()
                .GroupBy(x => (x.r.Type, x.r.Nodes.Count > 1, classOf[x.To], removed.Contains(x.To))).OrderBy(g => g.Key.ToString()))
                Console.WriteLine($"    receivers {g.Key}: {g.Select(x => x.To).Distinct().Count()} nodes");
            foreach (var g in plan.Recommendations.GroupBy(r => (r.Type, r.Nodes.Count > 1 ? "group" : "one")).OrderBy(g => g.Key.Type))
                Console.WriteLine($"    {g.Key.Type} {g.Key.Item2}: {g.Count()} recs, {g.Sum(r => r.Nodes.Count)} nodes, {g.Sum(r => r.CurrentCostPerHour):0.###} -> {g.Sum(r => r.NewCostPerHour):0.###} $/h");
        }
        int unexplained = snap.Nodes.Count(n => !removed.Contains(n.Name) && (!plan.Blockers.TryGetValue(n.Name, out var bl) || bl.Count == 0));
        report.Row(Section, $"{name}: nodes neither recommended for removal nor carrying a named blocker", "0", $"{unexplained}", unexplained == 0);
    }

    private static (Plan Plan, double Wall, double Cpu) Timed(Func<Plan> run)
    {
        var proc = Process.GetCurrentProcess();
        var cpu0 = proc.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var plan = run();
        var wall = sw.Elapsed.TotalSeconds;
        proc.Refresh();
        return (plan, wall, (proc.TotalProcessorTime - cpu0).TotalSeconds);
    }

    private static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
}
