namespace Karpetrack;

/// <summary>
/// What consolidation could reach at best when the blockers hold (issue 17, goal 3), split from the plan's own
/// shortfall: the nodes with a blocker of their own keep their pods and their price; the other pods (those of
/// unblocked nodes, and the pending ones) may go anywhere their constraints allow.
/// </summary>
/// <param name="BlockedNodes">Nodes with a blocker of their own (<see cref="Blockers.Of"/>): they stay whatever the plan.</param>
/// <param name="BlockedPerHour">The price of the priced ones among them.</param>
/// <param name="MovablePods">Pods of unblocked nodes (DaemonSet, mirror and terminating pods left out) and pending pods.</param>
/// <param name="BoundPerHour">A lower bound on the cost of any plan that keeps every blocked node: <see cref="BlockedPerHour"/>
/// plus the packer's dual bound over the movable pods, with the blocked nodes' free room as existing capacity and, as
/// bin types, the allowed classes and each unblocked node that no class dominates (a plan may keep it at its price).</param>
/// <param name="ExcludedPods">Movable pods no bin type takes, left out of the bound (as in <see cref="ClusterCosts"/>).</param>
/// <param name="RepackPerHour">An achievable cost: <see cref="BlockedPerHour"/> plus the packer's plan for every movable pod on
/// the blocked nodes' free room and new nodes of the allowed classes (every unblocked node removed); null when not asked.</param>
/// <param name="RepackUnplaced">Movable pods that plan could not place (their price is not in it).</param>
/// <param name="NodeTypes">Unblocked nodes added as bin types because no allowed class dominates them.</param>
/// <param name="PackerBoundPerHour">The same with the packer's own dual bound (free room priced at the dearest dual of each dimension):
/// what <see cref="WithExistingRoom"/> tightens.</param>
internal sealed record ConsolidationBound(int BlockedNodes, decimal BlockedPerHour, int MovablePods, decimal BoundPerHour, int ExcludedPods,
    decimal? RepackPerHour, int RepackUnplaced, int NodeTypes, decimal PackerBoundPerHour)
{
    /// <summary>
    /// Why valid: any plan that respects the blockers pays for every blocked node; every other pod then sits on a
    /// blocked node's free room (at no cost), on an unblocked node the plan keeps (at its price, no more room than its
    /// allocatable less its DaemonSet pods) or on a new node of an allowed class. That is a packing of the movable pods
    /// over these existing bins and bin types, so it costs no less than the packer's dual bound of that packing
    /// problem. An unblocked node is left out of the types when an allowed class dominates it: no dearer, at least as
    /// much room in every dimension, and every movable shape that may run on the node may run on the class.
    /// </summary>
    public static ConsolidationBound Compute(ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, DaemonSetRecord[] daemonSets, PriceBook book,
        RecommenderOptions o, bool repack)
    {
        var budgets = Budgets.Index(pdbs);
        var byNode = PodRules.ByNode(pods);
        var region = Offers.Region(snap, o);
        var offers = Offers.For(snap, book, region, o, daemonSets);
        var blocked = new List<NodeView>();
        var unblocked = new List<(NodeView Node, decimal Price)>();
        var movable = new List<PodFacts>(pods.Where(p => p.Pending && !p.IsOverhead && !p.Terminating));
        decimal blockedCost = 0;
        foreach (var n in snap.Nodes)
        {
            var on = byNode.GetValueOrDefault(n.Name) ?? [];
            var price = book.NodePrice(n.ServerClass, n.CapacityType);
            if (Blockers.Of(n, on, budgets, book).Count > 0 || price is null)
            {
                blocked.Add(n);
                blockedCost += price ?? 0;
                continue;
            }
            unblocked.Add((n, price.Value));
            foreach (var p in on) if (!p.IsOverhead && !p.Terminating) movable.Add(p);
        }
        var moving = movable.ToArray();
        var shapes = moving.Select(p => p.Shape).Distinct().ToArray();
        var types = new List<Offer>(offers);
        foreach (var (n, price) in unblocked)
        {
            var room = NodeRoom(n, snap.Resources, o, byNode.GetValueOrDefault(n.Name) ?? []);
            if (offers.Any(x => Dominates(x, n, room, price, shapes))) continue;
            var bin = new BinType(types.Count, n.Name, room, price);
            types.Add(new Offer(bin, book.Classes.GetValueOrDefault(n.ServerClass)!, n.Labels, false) { Taints = n.Taints });
        }
        var room0 = new Room0(snap, blocked, o, pods);
        var si = new ShapeIndex(snap.Resources);
        var items = moving.Select((p, i) => si.Item(i, p)).ToList();
        var problem = si.Problem(items, types, room0.Bins, (c, b) => si.AllowsNode(c, room0.Views[b.Id], room0.Groups.GetValueOrDefault(room0.Views[b.Id].Name)));
        var x = new PackingInstance(problem);
        int excluded = x.N - x.PlaceableItems;
        var dual = x.PlaceableItems == 0 ? null : DualBound.Compute(x);
        decimal bound = dual is null ? 0 : WithExistingRoom(x, dual);
        decimal? repackCost = null;
        int unplaced = 0;
        if (repack)
        {
            // The achievable side: every unblocked node removed, so only the allowed classes are bought.
            var buy = si.Problem(items, offers, room0.Bins, problem.BinAllows);
            var solution = Packer.Solve(buy);
            repackCost = blockedCost + solution.Cost;
            unplaced = solution.Unplaced.Count;
        }
        return new ConsolidationBound(blocked.Count, blockedCost, moving.Length, blockedCost + bound, excluded, repackCost, unplaced, types.Count - offers.Count,
            blockedCost + (dual?.Reported ?? 0));
    }

    /// <summary>
    /// The dual bound again, with the free room priced tighter. The packer's bound takes off, for each existing bin, its
    /// room priced at the dearest dual price of each dimension over all types: valid, but where much room is free (the
    /// blocked nodes of an underused cluster) it takes off most of the bound. Tighter and still valid: whatever items
    /// bin e takes are worth (Σ v_i) no more than w_t · free_e for any type t that every shape bin e may take could also
    /// use, because each such item's worth v_i is at most w_t · d_i (its cheapest allowed type under the same duals w).
    /// So bin e takes off at most the least of those, of the packer's own figure and of <see cref="OneDimension"/>'s
    /// (on the 5,000-node bench cluster that last one lifts the bound from 4.878 to 4.941 $/h). The higher of this and the
    /// packer's bound is reported.
    /// </summary>
    internal static decimal WithExistingRoom(PackingInstance x, DualBound dual)
    {
        const int D = PackingInstance.D;
        double all = 0, mustNew = 0;
        for (int s = 0; s < x.S; s++)
        {
            all += dual.Value[s] * x.SItems[s].Length;
            if (!x.AnyBin[s]) mustNew += dual.Value[s] * x.SItems[s].Length;
        }
        var usable = new bool[x.T];
        double taken = 0;
        for (int e = 0; e < x.E; e++)
        {
            Array.Fill(usable, true);
            for (int s = 0; s < x.S; s++)
            {
                if (!x.AnyType[s] || !x.BinOk[s * x.E + e]) continue;
                for (int t = 0; t < x.T; t++) usable[t] &= x.TypeOk[s * x.T + t];
            }
            double worth = 0;
            for (int r = 0; r < D; r++) worth += Math.Max(0, x.Free[e * D + r]) * dual.WMax[r];
            for (int t = 0; t < x.T; t++)
            {
                if (!usable[t]) continue;
                double w = 0;
                for (int r = 0; r < D; r++) w += Math.Max(0, x.Free[e * D + r]) * dual.W[t * D + r];
                worth = Math.Min(worth, w);
            }
            worth = Math.Min(worth, OneDimension(x, dual, e));
            taken += worth;
        }
        double lp = Math.Max(mustNew, all - taken);
        decimal mine = lp <= 0 ? 0m : (decimal)(lp * (1 - 1e-9));
        return Math.Max(mine, dual.Reported);
    }

    /// <summary>
    /// Another bound on what bin e's free room takes, one dimension at a time: items that fit it together ask at most
    /// its free amount of dimension r, and each is worth no more than its demand of r times the highest worth per unit
    /// of r among the shapes it may take, so the bin takes at most free_r times that rate (+∞ when a shape it may take
    /// asks none of r and is worth something). It counts what the room can really hold: a node with much free memory
    /// and little free cpu takes little, where the price vectors of the types may count its memory in full.
    /// </summary>
    private static double OneDimension(PackingInstance x, DualBound dual, int e)
    {
        const int D = PackingInstance.D;
        double best = double.PositiveInfinity;
        for (int r = 0; r < D; r++)
        {
            double rate = 0;
            bool unbounded = false;
            for (int s = 0; s < x.S && !unbounded; s++)
            {
                if (!x.AnyType[s] || !x.BinOk[s * x.E + e] || dual.Value[s] <= 0) continue;
                long d = x.SDem[s * D + r];
                if (d <= 0) unbounded = true;
                else rate = Math.Max(rate, dual.Value[s] / d);
            }
            if (!unbounded) best = Math.Min(best, Math.Max(0, x.Free[e * D + r]) * rate);
        }
        return best;
    }

    /// <summary>What a kept node offers the pods it could take back: allocatable less its DaemonSet and mirror pods.</summary>
    private static Demand NodeRoom(NodeView n, ResourceTable t, RecommenderOptions o, PodFacts[] on)
    {
        int overheadPods = on.Count(p => p.IsOverhead);
        return new Demand(n.Allocatable[ResourceTable.Cpu] - n.DaemonSetOverhead[ResourceTable.Cpu], n.Allocatable[ResourceTable.Memory] - n.DaemonSetOverhead[ResourceTable.Memory],
            PodRules.Gpus(n.Allocatable, t) - PodRules.Gpus(n.DaemonSetOverhead, t), o.MaxPodsPerNode - overheadPods);
    }

    private static bool Dominates(Offer x, NodeView n, Demand room, decimal price, PodShape[] shapes)
    {
        if (x.Bin.PricePerHour > price || !room.FitsIn(x.Bin.Capacity)) return false;
        if (x.Gpu) return false;   // GPU classes take GPU pods only: not a stand-in for a general node
        foreach (var s in shapes)
            if (s.AllowsNode(n.Labels, n.Taints) && !s.AllowsNode(x.Labels, x.Taints)) return false;
        return true;
    }

    /// <summary>The blocked nodes that may receive pods, as existing bins: their free room now, with the groups they hold.</summary>
    private sealed class Room0
    {
        public readonly List<ExistingBin> Bins = [];
        public readonly List<NodeView> Views = [];
        public readonly Dictionary<string, HashSet<string>> Groups;

        public Room0(ClusterSnapshot snap, List<NodeView> blocked, RecommenderOptions o, PodFacts[] pods)
        {
            Groups = PodRules.AntiAffinityGroups(pods);
            foreach (var n in blocked)
            {
                if (!Room.IsDestination(n)) continue;
                // An overcommitted dimension is no room, not a debt (a pod asking none of it still fits).
                var free = new Demand(Math.Max(0, n.Allocatable[ResourceTable.Cpu] - n.Allocated[ResourceTable.Cpu]), Math.Max(0, n.Allocatable[ResourceTable.Memory] - n.Allocated[ResourceTable.Memory]),
                    Math.Max(0, PodRules.Gpus(n.Allocatable, snap.Resources) - PodRules.Gpus(n.Allocated, snap.Resources)), Math.Max(0, o.MaxPodsPerNode - n.Pods));
                Bins.Add(new ExistingBin(Bins.Count, n.Name, free));
                Views.Add(n);
            }
        }
    }
}
