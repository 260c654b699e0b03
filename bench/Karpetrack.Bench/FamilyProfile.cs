using System.Globalization;
using System.Runtime.InteropServices;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench family-profile --models a,b --workloads w --pods N`: where the time of one provisioning plan goes,
/// by phase, in this thread's CPU time (the machine is shared; wall time counts waits for a core). The phases replay
/// what <see cref="Recommender.Recommend"/> and <see cref="Packer.Solve"/> do, step by step; prints only. With
/// `--recommender-bench` it profiles the recommender table's provisioning instance instead (iad, percentiles feed).
/// </summary>
internal static class FamilyProfile
{
    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec { public long Sec; public long NSec; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec ts);

    /// <summary>This thread's CPU time in ms (CLOCK_THREAD_CPUTIME_ID).</summary>
    public static double ThreadCpuMs()
    {
        ClockGetTime(3, out var ts);
        return ts.Sec * 1e3 + ts.NSec / 1e6;
    }

    public static void Run(string[] args)
    {
        var models = Arg(args, "--models")?.Split(',').ToHashSet(StringComparer.Ordinal);
        var workloads = Arg(args, "--workloads")?.Split(',') ?? PackingFamily.Workloads;
        int n = Arg(args, "--pods") is { } p ? int.Parse(p, CultureInfo.InvariantCulture) : 10_000;
        int runs = Arg(args, "--runs") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 5;
        if (Arg(args, "--dump") is not null) { RunDump(args); return; }
        if (args.Contains("--recommender-bench"))
        {
            // The recommender table's instance (RecommenderBench.RunProvisioning): the perf-anchors mix on the iad classes of
            // the percentiles feed, not the family's feed snapshot.
            var bench = new PackingFamily.PriceModel("recommender bench (iad)", RecommenderBench.Book(), new RecommenderOptions { Region = "us-east-iad-1" }, false);
            Profile(bench, "mix", n, runs, RecommenderBench.PendingMix(n));
            return;
        }
        foreach (var model in PackingFamily.PriceModels().Where(m => models is null || models.Contains(m.Name)))
            foreach (var workload in workloads)
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                Profile(model, workload, n, runs);
            }
    }

    private static void Profile(PackingFamily.PriceModel model, string workload, int n, int runs, ClusterModel? given = null)
    {
        var cluster = given ?? PackingFamily.Cluster(workload, n, seed: n + Array.IndexOf(PackingFamily.Workloads, workload));
        var snap = cluster.Snapshot();
        var pods = cluster.Pods();
        var phases = new Dictionary<string, List<double>>(StringComparer.Ordinal);
        var order = new List<string>();
        string cost = "";
        for (int run = -1; run < runs; run++)
        {
            double t0 = ThreadCpuMs(), last = t0;
            void Mark(string phase)
            {
                double now = ThreadCpuMs();
                if (run >= 0)
                {
                    if (!phases.TryGetValue(phase, out var l)) { phases[phase] = l = []; order.Add(phase); }
                    l.Add(now - last);
                }
                last = now;
            }
            var plan = Recommender.Recommend(snap, pods, [], [], model.Book, model.Options);
            Mark("whole recommender");
            last = ThreadCpuMs();
            var state = new PlanState(snap, pods, [], [], model.Book, model.Options, [], null);
            Mark("plan state");
            var pending = Provisioning.Candidates(state);
            var shapes = new ShapeIndex(state.Resources);
            var items = pending.Select((q, i) => shapes.Item(i, q)).ToList();
            var existing = state.Room.Bins(null);
            var problem = shapes.Problem(items, state.Offers, existing, (c, b) => shapes.AllowsNode(c, state.Room.View(b.Name), state.Room.GroupsOn(b.Name)));
            Mark("items");
            var x = new PackingInstance(problem);
            Mark("instance");
            var dual = DualBound.Compute(x);
            Mark("dual bound");
            var o = new PackingOptions();
            if (x.PlaceableItems >= o.FloorCutMinItems) dual = dual.WithFloorCuts(x);
            Mark("floor cuts");
            // Unconditionally here (Solve runs it only where the plan is more than 2 % + one node above the bound), to cost it.
            var exactLp = dual.WithExactLp(x, o.ExactLpPivots);
            Mark("exact LP");
            if (run == 0) Console.WriteLine($"  bound: ascent {dual.Reported}, exact LP {exactLp.Reported} ({string.Join("; ", exactLp.ExactStats.Select(q => $"{q.Rows} rows, {q.Columns} columns, {q.Pivots} pivots, optimal {q.Optimal}, bound {q.Bound:F4}"))})");
            PackingSolution? best = null;
            foreach (var byDual in x.PlaceableItems <= o.ChoicePortfolioItems ? new[] { false, true } : [false])
            {
                var oo = o with { ChoiceByDual = byDual };
                string tag = byDual ? " (by dual)" : "";
                var st = new Assignment(x, dual);
                ExistingCapacity.Fill(st);
                Greedy.Run(st, oo);
                Mark("greedy" + tag);
                if (x.PlaceableItems <= oo.LocalSearchItems) LocalSearch.Run(st, oo); else LocalSearch.DownsizeOnly(st);
                Mark("local search" + tag);
                new RuinAndRepair(st, oo).Run();
                Mark("ruin and repair" + tag);
                var sol = st.ToSolution("x");
                if (run == 0) Console.WriteLine($"  construction{tag}: {sol.Cost} {sol.Unplaced.Count}");
                Mark("to solution" + tag);
                if (best is null || sol.Unplaced.Count < best.Unplaced.Count || (sol.Unplaced.Count == best.Unplaced.Count && sol.Cost < best.Cost)) best = sol;
            }
            var solve = Packer.Solve(problem);
            Mark("Packer.Solve");
            var state2 = new PlanState(snap, pods, [], [], model.Book, model.Options, [], null);
            Mark("plan state (2)");
            var pend2 = Provisioning.Candidates(state2);
            var packed = PackedPods.Solve(state2.Room, pend2, state2.Offers, state2.Resources);
            Mark("decide: PackedPods.Solve");
            var claims = packed.Claims();
            var capacity = packed.NewNodes();
            Mark("decide: claims, new nodes");
            var moves = new List<PodMove>(pend2.Length);
            capacity.AddMoves(moves, pend2);
            Mark("decide: moves");
            var served = new string[moves.Count];
            for (int k = 0; k < moves.Count; k++) served[k] = moves[k].Namespace + "/" + moves[k].Pod;
            Mark("decide: names");
            Array.Sort(served, StringComparer.Ordinal);
            Mark("decide: sort names");
            var rec = Recommendations.Build(RecommendationType.Provision, [], capacity.Nodes, moves, served, new Costs(0, 1, 1), Disruption.None, []);
            Mark("decide: Recommendations.Build");
            var decided = Provisioning.Decide(state2, Provisioning.Candidates(state2));
            Mark("Provisioning.Decide");
            state2.Apply(decided);
            state2.Room.CloseProvisioning();
            state2.RankCandidates();
            Mark("apply, rank");
            var plan2 = state2.ToPlan();
            Mark("to plan");
            last = ThreadCpuMs();
            cost = $"plan {plan.Recommendations.SingleOrDefault(q => q.Type == RecommendationType.Provision)?.NewCostPerHour} $/h, replay {best!.Cost}, solve {solve.Cost}, bound {solve.LowerBound}, {x.S} shapes, {x.T} types";
        }
        Console.WriteLine($"{model.Name} {workload} {n}: {cost}");
        foreach (var ph in order)
        {
            var l = phases[ph].Order().ToList();
            Console.WriteLine($"  {ph,-28} p50 {l[l.Count / 2],8:F1} ms  (min {l[0]:F1})");
        }
    }

    /// <summary>
    /// `Karpetrack.Bench family-cg --models a,b --workloads w --pods N [--groups G]`: column generation without its
    /// product limits (any size, 400 rounds, large pivot and node budgets) on the recommender's own packing problem: the
    /// configuration LP's bound (rounded-down groups) and its plan (rounded-up groups), against the plan and bound of the
    /// product. Prints only; minutes per instance at 10k pods.
    /// </summary>
    public static void RunOffline(string[] args)
    {
        var models = Arg(args, "--models")?.Split(',').ToHashSet(StringComparer.Ordinal);
        var workloads = Arg(args, "--workloads")?.Split(',') ?? PackingFamily.Workloads;
        int n = Arg(args, "--pods") is { } p ? int.Parse(p, CultureInfo.InvariantCulture) : 10_000;
        int groups = Arg(args, "--groups") is { } g ? int.Parse(g, CultureInfo.InvariantCulture) : 160;
        foreach (var model in PackingFamily.PriceModels().Where(m => models is null || models.Contains(m.Name)))
            foreach (var workload in workloads)
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                var problem = RecommenderProblem(model, workload, n);
                var product = Packer.Solve(problem);
                var x = new PackingInstance(problem);
                var dual = DualBound.Compute(x);
                var o = new PackingOptions { ColumnGroups = groups, ColumnIterations = 400, ColumnPivots = 200_000, ColumnPricingNodes = 100_000, ColumnTotalNodes = 50_000_000 };
                var budget = new ColumnGeneration.Budget(o.ColumnGroups, o.ColumnIterations, o.ColumnPivots, o.ColumnPricingNodes, o.ColumnTotalNodes);
                double c0 = ThreadCpuMs();
                var include = new bool[x.S];
                for (int s = 0; s < x.S; s++) include[s] = x.AnyType[s] && !x.AnyBin[s];
                var st = new Assignment(x, dual);
                ExistingCapacity.Fill(st);
                Greedy.Run(st, o);
                var down = ColumnGeneration.Run(x, dual, include, st.Bins, budget);
                double c1 = ThreadCpuMs();
                var plan = ColumnPlan.Build(x, dual, o, budget);
                double c2 = ThreadCpuMs();
                var up = ColumnGeneration.Run(x, dual, include, st.Bins, budget, roundUp: true);
                string D(ColumnGeneration.Result? r) => r is null ? "n/a" : $"bound {r.Bound:F4} (LP {r.LpValue:F4}, {r.Groups.G} groups, {r.Iterations} rounds, {r.Nodes} nodes, converged {r.Converged})";
                Console.WriteLine($"{model.Name} {workload} {n}: product plan {product.Cost} bound {product.LowerBound} (resource {product.ResourceBound}); "
                    + $"configuration LP rounded down: {D(down)} in {c1 - c0:F0} ms; rounded up: {D(up)}; its plan {plan?.Cost} ({plan?.Unplaced.Count} unplaced) in {c2 - c1:F0} ms");
            }
    }

    /// <summary>The packing problem the recommender builds for the pending pods of one family instance.</summary>
    private static PackingProblem RecommenderProblem(PackingFamily.PriceModel model, string workload, int n)
    {
        var cluster = PackingFamily.Cluster(workload, n, seed: n + Array.IndexOf(PackingFamily.Workloads, workload));
        var state = new PlanState(cluster.Snapshot(), cluster.Pods(), [], [], model.Book, model.Options, [], null);
        var pending = Provisioning.Candidates(state);
        var shapes = new ShapeIndex(state.Resources);
        var items = pending.Select((q, i) => shapes.Item(i, q)).ToList();
        return shapes.Problem(items, state.Offers, state.Room.Bins(null), (c, b) => shapes.AllowsNode(c, state.Room.View(b.Name), state.Room.GroupsOn(b.Name)));
    }

    /// <summary>
    /// `Karpetrack.Bench family-profile --models a --workloads w --pods N --dump file`: the recommender's packing problem of one
    /// instance as text, for offline checks (an independent LP): "T name cpu mem gpu pods price" per bin type, "C con
    /// allowed-type-ids" per constraint class, "S con group cpu mem gpu pods count" per shape; then the product's plan and bound.
    /// </summary>
    public static void RunDump(string[] args)
    {
        var model = PackingFamily.PriceModels().Single(m => m.Name == Arg(args, "--models"));
        string workload = Arg(args, "--workloads") ?? "mix";
        int n = Arg(args, "--pods") is { } p ? int.Parse(p, CultureInfo.InvariantCulture) : 10_000;
        var problem = RecommenderProblem(model, workload, n);
        var x = new PackingInstance(problem);
        var w = new StringWriter(CultureInfo.InvariantCulture);
        for (int t = 0; t < x.T; t++)
            w.WriteLine($"T {problem.Types[t].Name} {x.Cap[t * 4]} {x.Cap[t * 4 + 1]} {x.Cap[t * 4 + 2]} {x.Cap[t * 4 + 3]} {problem.Types[t].PricePerHour}");
        foreach (var con in Enumerable.Range(0, x.S).Select(s => x.SCon[s]).Distinct().Order())
        {
            w.WriteLine($"C {con} " + string.Join(' ', Enumerable.Range(0, x.T).Where(t => problem.TypeAllows(con, problem.Types[t]))));
        }
        for (int s = 0; s < x.S; s++)
            w.WriteLine($"S {x.SCon[s]} {x.SAa[s]} {x.SDem[s * 4]} {x.SDem[s * 4 + 1]} {x.SDem[s * 4 + 2]} {x.SDem[s * 4 + 3]} {x.SItems[s].Length} " + string.Join(',', Enumerable.Range(0, x.T).Where(t => x.TypeOk[s * x.T + t])));
        var sol = Packer.Solve(problem);
        w.WriteLine($"# plan {sol.Cost} bound {sol.LowerBound} resource {sol.ResourceBound} unplaced {sol.Unplaced.Count}");
        foreach (var g in sol.NewBins.GroupBy(b => b.Type.Name).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            double cpu = g.Sum(b => (double)b.Used.CpuMilli) / g.Sum(b => (double)b.Type.Capacity.CpuMilli);
            double mem = g.Sum(b => (double)b.Used.MemoryBytes) / g.Sum(b => (double)b.Type.Capacity.MemoryBytes);
            var cons = string.Join(',', g.SelectMany(b => b.Items).GroupBy(i => problem.Items[i].Constraint).OrderBy(c => c.Key).Select(c => $"{c.Key}:{c.Count()}"));
            w.WriteLine($"# bins {g.Key} {g.Count()} cpu {cpu:P1} mem {mem:P1} items by class {cons}");
        }
        foreach (var u in sol.Unplaced) w.WriteLine($"# unplaced {u.Item} class {problem.Items[u.Item].Constraint} {problem.Items[u.Item].Demand}: {u.Reason}");
        File.WriteAllText(Arg(args, "--dump")!, w.ToString());
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
