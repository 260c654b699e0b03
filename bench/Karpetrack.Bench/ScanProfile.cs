using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Text;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench scan-profile [--runs N] [--dump FILE]`: a bench-only probe of the recommender's scan. On the
/// 5,000-node synthetic cluster and both underused clusters it runs the recommender's steps one by one (the same
/// sequence as <see cref="Recommender.Recommend"/>, checked to give the same plan) and prints, per step, the wall
/// time and the managed bytes allocated; per run, the process CPU time, the peak managed heap seen by a sampler
/// (above the heap before the run) and what the plan and the cost outlook keep after it. --dump writes the three
/// plans as text (<see cref="PlanText"/>) for a byte-for-byte comparison of two builds.
/// </summary>
internal static class ScanProfile
{
    public static void Run(string[] args, int nodes, int pods)
    {
        int runs = Arg(args, "--runs", 3);
        int i = Array.IndexOf(args, "--dump");
        string? dump = i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        var book = RecommenderBench.Book();
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        var sb = new StringBuilder();
        Console.WriteLine($"scan-profile: load {Load()}");
        foreach (var (n, seed) in new[] { (200, 1), (2_000, 2) })
        {
            var c = UnderusedCluster.Build(n, seed, book);
            Profile($"underused {n}", c.Model.Snapshot(), c.Model.Pods(), c.Pdbs, book, options, runs, sb);
        }
        var data = SyntheticData.Build(nodes, pods);
        var big = RecommenderBench.Load(data);
        data = null;
        GC.Collect();
        // SCAN_ALLOC=1: the 5,000-node runs' small-object allocations by type, sampled by the runtime (one GCAllocationTick per ~100 KB).
        using var ticks = Environment.GetEnvironmentVariable("SCAN_ALLOC") == "1" ? new AllocationTicks() : null;
        Profile($"synthetic {nodes}", big.Snapshot(), big.Pods(), [], book, options, runs, sb);
        ticks?.Print(runs + 1);
        GC.KeepAlive(big);
        if (dump is not null) File.WriteAllText(dump, sb.ToString(), new UTF8Encoding(false));
        Console.WriteLine($"scan-profile: load {Load()}");
    }

    private static void Profile(string name, ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, PriceBook book, RecommenderOptions o, int runs, StringBuilder sb)
    {
        var reference = Recommender.Recommend(snap, pods, pdbs, [], book, o);   // warm up, and the plan the steps must give
        var refText = Text(name, reference);
        sb.Append(refText);
        reference = null;
        for (int run = 0; run < runs; run++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            long before = GC.GetTotalMemory(true);
            var steps = new List<(string Step, double Ms, long Bytes, double GcMs)>();
            long peak = before, committed0 = GC.GetGCMemoryInfo().TotalCommittedBytes, peakCommitted = committed0, peakGen2 = 0;
            using var stop = new ManualResetEventSlim();
            var sampler = new Thread(() =>
            {
                while (!stop.Wait(1))
                {
                    peak = Math.Max(peak, GC.GetTotalMemory(false));
                    // As of the last collection: what the GC holds committed, and what survived into gen2 (live or not yet collected).
                    var info = GC.GetGCMemoryInfo();
                    peakCommitted = Math.Max(peakCommitted, info.TotalCommittedBytes);
                    if (info.GenerationInfo.Length > 2) peakGen2 = Math.Max(peakGen2, info.GenerationInfo[2].SizeAfterBytes);
                }
            }) { IsBackground = true };
            sampler.Start();
            var proc = Process.GetCurrentProcess();
            var cpu0 = proc.TotalProcessorTime;
            long gcs0 = GC.CollectionCount(0);
            var total = Stopwatch.StartNew();
            void Step(string step, Action a)
            {
                long b0 = GC.GetAllocatedBytesForCurrentThread();
                var p0 = GC.GetTotalPauseDuration();
                var sw = Stopwatch.StartNew();
                a();
                steps.Add((step, sw.Elapsed.TotalMilliseconds, GC.GetAllocatedBytesForCurrentThread() - b0, (GC.GetTotalPauseDuration() - p0).TotalMilliseconds));
            }
            PlanState state = null!;
            Plan plan = null!;
            Step("state", () => state = new PlanState(snap, pods, pdbs, [], book, o, [], null));
            Step("provisioning", () => { state.Apply(Provisioning.Decide(state, Provisioning.Candidates(state))); state.Room.CloseProvisioning(); });
            Step("rank", () => state.RankCandidates());
            Step("single", () => { var s = new SingleNodeConsolidation(state); foreach (var c in s.Candidates()) state.Apply(s.Decide(c)); });
            if (run == 0 && Environment.GetEnvironmentVariable("SCAN_DETAIL") == "1") MultiDetail(state);
            Step("multi", () => state.Apply(MultiNodeConsolidation.Decide(state, MultiNodeConsolidation.Candidates(state))));
            if (run == 0 && Environment.GetEnvironmentVariable("SCAN_DETAIL") == "1") ReplaceDetail(state);
            List<List<Candidate>> groups = null!, again = null!;
            Step("groups", () => groups = MultiNodeReplacement.Groups(state, ownNodes: false));
            Step("group-replace", () => { foreach (var g in groups) state.Apply(MultiNodeReplacement.Decide(state, g)); });
            Step("replace", () => { foreach (var c in Replacement.Candidates(state)) state.Apply(Replacement.Decide(state, c)); });
            Step("groups-again", () => again = MultiNodeReplacement.Groups(state));
            Step("group-replace-again", () => { foreach (var g in again) state.Apply(MultiNodeReplacement.Decide(state, g)); });
            if (run == 0) Console.WriteLine($"  {groups.Count} groups of {groups.Sum(g => g.Count)} candidates, then {again.Count} of {again.Sum(g => g.Count)}");
            Step("last-single", () => { var s = new SingleNodeConsolidation(state, lastPass: true); foreach (var c in s.Candidates()) state.Apply(s.Decide(c)); });
            Step("to-plan", () => plan = state.ToPlan());
            var wall = total.Elapsed.TotalSeconds;
            proc.Refresh();
            var cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
            state = null!;
            Step("outlook", () => plan = ClusterCosts.WithOutlook(plan, snap, pods, [], book, o));
            stop.Set();
            sampler.Join();
            long kept = GC.GetTotalMemory(true) - before;
            long allocated = steps.Sum(s => s.Bytes);
            if (Text(name, plan with { Costs = null }) != refText) Console.WriteLine($"  {name}: the steps' plan differs from Recommender.Recommend's!");
            var counts = string.Join(", ", plan.Recommendations.GroupBy(r => r.Type).OrderBy(g => g.Key).Select(g => $"{g.Count()} {g.Key}"));
            decimal after = plan.Costs!.AfterRecommendationsPerHour;
            Console.WriteLine($"{name} run {run}: plan wall {wall:F2} s, CPU {cpu:F2} s, gen0 GCs {GC.CollectionCount(0) - gcs0}; allocated {allocated / 1e6:F0} MB; "
                + $"peak managed heap {(peak - before) / 1e6:F0} MB above {before / 1e6:F0} MB; peak GC committed {peakCommitted / 1e6:F0} MB (before {committed0 / 1e6:F0}), gen2 after a collection {peakGen2 / 1e6:F0} MB; kept after with the outlook {kept / 1e6:F1} MB; {counts}; after {after:0.###} $/h, outlook bound {plan.Costs.LowerBoundPerHour} $/h ({plan.Costs.LowerBoundExcludedPods} pods out); load {Load()}");
            Console.WriteLine("  " + string.Join(", ", steps.Select(s => $"{s.Step} {s.Ms:F0} ms (GC {s.GcMs:F0})/{s.Bytes / 1e6:F0} MB")));
            GC.KeepAlive(plan);
        }
    }

    /// <summary>What the one-node replacements spend: the floor of every candidate, and the packings of those whose floor saves enough.</summary>
    private static void ReplaceDetail(PlanState s)
    {
        int candidates = 0, receiving = 0, floorPass = 0, solved = 0;
        double floorMs = 0, solveMs = 0, buildMs = 0;
        var perNode = new PackingOptions { ExactItems = 12, ExactNodes = 20_000, PortfolioItems = 0 };
        var podCounts = new List<int>();
        foreach (var c in s.Candidates)
        {
            if (s.IsClaimed(c.Node.Name)) continue;
            candidates++;
            if (s.Receives(c.Node.Name)) { receiving++; continue; }
            if (c.Movable.Length == 0) continue;
            var sw = Stopwatch.StartNew();
            var shapes = new ShapeIndex(s.Resources);
            var items = c.Movable.Select((p, i) => shapes.Item(i, p)).ToList();
            var problem = shapes.Problem(items, s.Offers, [], (_, _) => false);
            buildMs += sw.Elapsed.TotalMilliseconds; sw.Restart();
            var floor = Packer.LowerBound(problem, out _);
            floorMs += sw.Elapsed.TotalMilliseconds;
            if (!s.Options.SavesEnoughToReplace(c.Price, c.Price - floor)) continue;
            floorPass++;
            podCounts.Add(c.Movable.Length);
            sw.Restart();
            var sol = Packer.Solve(problem, perNode);
            solveMs += sw.Elapsed.TotalMilliseconds;
            if (sol.Unplaced.Count == 0 && s.Options.SavesEnoughToReplace(c.Price, c.Price - sol.Cost)) solved++;
        }
        podCounts.Sort();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        int withPods = 0, weakPrunes = 0, weakWrong = 0;
        var classes = s.Offers.Where(o => o.Bin.Capacity.CpuMilli > 0 && o.Bin.Capacity.MemoryBytes > 0)
            .Select(o => (Cpu: (double)o.Bin.Capacity.CpuMilli, Mem: (double)o.Bin.Capacity.MemoryBytes, Price: (double)o.Bin.PricePerHour)).ToArray();
        foreach (var c in s.Candidates)
        {
            if (c.Movable.Length == 0 || s.IsClaimed(c.Node.Name) || s.Receives(c.Node.Name)) continue;
            withPods++;
            keys.Add(string.Join(";", c.Movable.Select(p => $"{System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(p.Shape)}:{PodRules.DemandOf(p, s.Resources)}").Order(StringComparer.Ordinal)));
            double cpu = c.Movable.Sum(p => (double)p.Requests[ResourceTable.Cpu]), mem = c.Movable.Sum(p => (double)p.Requests[ResourceTable.Memory]);
            double weak = SingleNodeConsolidation.CheapestFor(classes, cpu, mem);
            bool prune = !s.Options.SavesEnoughToReplace(c.Price, c.Price - (decimal)weak);
            if (prune) weakPrunes++;
            if (prune && MultiNodeReplacement.Floor(s, c.Movable) is { } f && s.Options.SavesEnoughToReplace(c.Price, c.Price - f)) weakWrong++;
        }
        Console.WriteLine($"  {withPods} candidates with pods, {keys.Count} distinct compositions; the 2-d cover prunes {weakPrunes}, of which the floor passes {weakWrong}");
        Console.WriteLine($"  replace detail: {candidates} candidates, {receiving} receiving, {floorPass} floors save enough, {solved} packings save enough; "
            + $"build {buildMs:F0} ms, floors {floorMs:F0} ms, packings {solveMs:F0} ms; pods per packed candidate median {(podCounts.Count > 0 ? podCounts[podCounts.Count / 2] : 0)}, max {(podCounts.Count > 0 ? podCounts[^1] : 0)}");
    }

    /// <summary>The multi-node consolidation's one packing, with the packer's default options and without its heavier steps.</summary>
    private static void MultiDetail(PlanState s)
    {
        var group = MultiNodeConsolidation.Candidates(s);
        var names = group.Select(g => g.Node.Name).ToHashSet(StringComparer.Ordinal);
        var pods = group.SelectMany(g => g.Movable).ToArray();
        foreach (var (label, o) in new (string, PackingOptions)[] { ("default", new()), ("no cg", new() { ColumnGenerationItems = 0 }), ("no cg, no portfolio", new() { ColumnGenerationItems = 0, PortfolioItems = 0, ChoicePortfolioItems = 0 }) })
        {
            var shapes = new ShapeIndex(s.Resources);
            var items = pods.Select((p, i) => shapes.Item(i, p)).ToList();
            var sw = Stopwatch.StartNew();
            var existing = s.Room.Bins(names);
            long b0 = GC.GetAllocatedBytesForCurrentThread();
            var problem = shapes.Problem(items, s.Offers, existing, (c, b) => shapes.AllowsNode(c, s.Room.View(b.Name), s.Room.GroupsOn(b.Name)));
            var x = new PackingInstance(problem);
            var instMs = sw.Elapsed.TotalMilliseconds; var instB = GC.GetAllocatedBytesForCurrentThread() - b0;
            sw.Restart();
            var sol = Packer.Solve(problem, o);
            Console.WriteLine($"  multi {label}: {pods.Length} pods, {existing.Count} bins, {x.S} shapes; instance {instMs:F0} ms/{instB / 1e6:F0} MB; solve {sw.Elapsed.TotalMilliseconds:F0} ms; cost {sol.Cost}, {sol.NewBins.Count} new, {sol.Unplaced.Count} unplaced");
        }
    }

    private static string Text(string name, Plan plan)
    {
        var sb = new StringBuilder();
        PlanText.Append(sb, name, plan);
        return sb.ToString();
    }

    private static int Arg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
    }

    private static string Load() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ')[..3]) : "?";

    /// <summary>GCAllocationTick events summed by type name: which types a scan allocates most of (each tick stands for ~100 KB).</summary>
    private sealed class AllocationTicks : EventListener
    {
        private readonly Dictionary<(string Type, bool Large), long> bytes = [];

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime") EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventName is not { } n || !n.StartsWith("GCAllocationTick", StringComparison.Ordinal) || e.PayloadNames is null) return;
            int t = e.PayloadNames.IndexOf("TypeName"), a = e.PayloadNames.IndexOf("AllocationAmount64"), k = e.PayloadNames.IndexOf("AllocationKind");
            if (t < 0 || a < 0) return;
            var key = ((string)e.Payload![t]!, k >= 0 && Convert.ToInt32(e.Payload[k]) == 1);
            lock (bytes) bytes[key] = bytes.GetValueOrDefault(key) + Convert.ToInt64(e.Payload[a]);
        }

        public void Print(int runs)
        {
            lock (bytes)
                foreach (var ((type, large), b) in bytes.OrderByDescending(x => x.Value).Take(30))
                    Console.WriteLine($"  alloc per run {b / runs / 1e6,7:F1} MB {(large ? "LOH" : "SOH")} {type}");
        }
    }
}
