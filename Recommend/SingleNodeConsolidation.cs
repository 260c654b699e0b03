namespace Karpetrack;

/// <summary>
/// Single-node consolidation, empty nodes included. Which candidates? The removal candidates in rank order (empty
/// ones first), but those receiving pods of a node already removed. What command? Delete the node when each of its
/// pods fits on the room left on the other open nodes, first fit, fullest first; else keep it with a blocker naming
/// the pods that fit nowhere.
/// </summary>
/// <remarks>
/// Run twice. First (<paramref name="lastPass"/> false) without the nodes dear for their size as destinations: filled,
/// they would stay as receivers, where replaced several together they save more. Then, after the replacements, once more
/// over the candidates nothing claimed, with every node as a destination (the dear ones last), so that no removal the
/// first pass left out for a replacement that did not come is lost.
/// </remarks>
internal sealed class SingleNodeConsolidation(PlanState state, bool lastPass = false)
{
    /// <summary>The tier of <see cref="Tiers"/> of a removable node dear for its size (not receiving pods).</summary>
    internal const int DearForSize = 2;

    private readonly Destinations destinations = new(state.Room, state.Resources, Tiers(state), maxTier: lastPass ? 2 : 1);

    /// <summary>
    /// Destinations: the nodes that stay first; then removable ones; last, removable ones dear for their size: when the
    /// cheapest mix of the allowed classes holding as much cpu and memory as the node costs at least the replacement
    /// threshold's percentage less. Filled, such a node would stay as a receiver at its price; emptied or replaced
    /// (several together if need be) it saves.
    /// </summary>
    internal static Func<string, int> Tiers(PlanState s)
    {
        var byName = s.Candidates.ToDictionary(c => c.Node.Name, StringComparer.Ordinal);
        var classes = s.Offers.Where(o => !o.Gpu && o.Bin.Capacity.CpuMilli > 0 && o.Bin.Capacity.MemoryBytes > 0)
            .Select(o => (Cpu: (double)o.Bin.Capacity.CpuMilli, Mem: (double)o.Bin.Capacity.MemoryBytes, Price: (double)o.Bin.PricePerHour)).ToArray();
        double keep = 1 - (double)s.Options.ReplaceThresholdPercent / 100;
        return name =>
        {
            if (!byName.TryGetValue(name, out var c) || s.Receives(name)) return 0;
            var n = c.Node;
            double size = CheapestFor(classes, n.Allocatable[ResourceTable.Cpu], n.Allocatable[ResourceTable.Memory]);
            return size <= (double)c.Price * keep ? DearForSize : 1;
        };
    }

    /// <summary>
    /// The least a fractional mix of the classes holding this much cpu and memory costs (the LP's optimum: one class,
    /// or two that fill both exactly); infinity when none holds any.
    /// </summary>
    internal static double CheapestFor((double Cpu, double Mem, double Price)[] classes, double cpu, double mem)
    {
        double best = double.PositiveInfinity;
        foreach (var a in classes) best = Math.Min(best, a.Price * Math.Max(cpu / a.Cpu, mem / a.Mem));
        for (int i = 0; i < classes.Length; i++)
            for (int j = i + 1; j < classes.Length; j++)
            {
                var (a, b) = (classes[i], classes[j]);
                double det = a.Cpu * b.Mem - b.Cpu * a.Mem;
                if (det == 0) continue;
                double ya = (cpu * b.Mem - b.Cpu * mem) / det, yb = (a.Cpu * mem - cpu * a.Mem) / det;
                if (ya >= 0 && yb >= 0) best = Math.Min(best, ya * a.Price + yb * b.Price);
            }
        return best;
    }

    public IEnumerable<Candidate> Candidates()
    {
        foreach (var c in state.Candidates)
        {
            state.Tick();
            if (!state.Receives(c.Node.Name) && !(lastPass && state.IsClaimed(c.Node.Name))) yield return c;
        }
    }

    public Decision Decide(Candidate c)
    {
        var (node, movable, price) = c;
        var placement = destinations.TryPlace(movable, node.Name);
        if (placement.Unfit is { } unfit)
            // The last pass keeps the first pass's blocker (and the replacement's) rather than naming the same pods twice.
            return lastPass ? new Command(null, []) : new Keep(node.Name, new Blocker(BlockerReasons.PodsDoNotFit, unfit, []));
        var type = movable.Length == 0 ? RecommendationType.DeleteEmpty : RecommendationType.Consolidate;
        var reasons = new List<string>
        {
            movable.Length == 0
                ? $"{node.Name} runs no pods but DaemonSet and mirror pods; it costs {price:0.###} $/h"
                : $"the {movable.Length} pods of {node.Name} fit on the remaining nodes; removing it saves {price:0.###} $/h",
        };
        var rec = Recommendations.Build(type, [node.Name], [], placement.Moves, [], new Costs(price, 0, 0), state.Budgets.Disruption(movable), reasons);
        destinations.Kept(placement);
        return new Command(rec, placement.Claims);
    }
}
