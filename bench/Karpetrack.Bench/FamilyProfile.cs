using System.Globalization;
using System.Runtime.InteropServices;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench family-profile --models a,b --workloads w --pods N`: where the time of one provisioning plan goes,
/// by phase, in this thread's CPU time (the machine is shared; wall time counts waits for a core). The phases replay
/// what <see cref="Recommender.Recommend"/> and <see cref="Packer.Solve"/> do, step by step; prints only.
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
        foreach (var model in PackingFamily.PriceModels().Where(m => models is null || models.Contains(m.Name)))
            foreach (var workload in workloads)
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                Profile(model, workload, n, runs);
            }
    }

    private static void Profile(PackingFamily.PriceModel model, string workload, int n, int runs)
    {
        var cluster = PackingFamily.Cluster(workload, n, seed: n + Array.IndexOf(PackingFamily.Workloads, workload));
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

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
