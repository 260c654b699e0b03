namespace Karpetrack;

/// <summary>
/// The three numbers of the cluster's cost outlook, made with each plan: what the priced nodes cost today, what they
/// cost once every recommendation of the plan is carried out, and a proven lower bound on hosting the pods at all.
/// </summary>
/// <param name="TodayPerHour">Sum of the prices of the priced nodes of the snapshot (karpetrack_cluster_cost_dollars_per_hour as the plan saw it).</param>
/// <param name="AfterRecommendationsPerHour">Today's cost minus every recommendation's saving; a provisioning recommendation saves the
/// negative of its new nodes' price, so the nodes bought for pending pods are added.</param>
/// <param name="LowerBoundPerHour">No set of new nodes of the allowed classes hosting every counted pod (placed and pending, DaemonSet,
/// mirror and terminating pods left out) costs less; see <see cref="ClusterCosts.LowerBound"/>.</param>
/// <param name="LowerBoundExcludedPods">Pods no allowed class can take (selectors, taints, size): left out of the bound.</param>
public sealed record ClusterCosts(decimal TodayPerHour, decimal AfterRecommendationsPerHour, decimal LowerBoundPerHour, int LowerBoundExcludedPods)
{
    /// <summary>
    /// The plan with its cost outlook: today's cost from the snapshot and the book, the cost after the plan's
    /// recommendations, and the lower bound over the classes provisioning would buy in the plan's region. Made by the
    /// recommender loop after each plan (the plan itself does not depend on it).
    /// </summary>
    public static Plan WithOutlook(Plan plan, ClusterSnapshot snap, PodFacts[] pods, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o)
    {
        var today = CostTotals.Of(snap, book).Cost;
        var after = today - plan.Recommendations.Sum(r => r.SavingsPerHour);
        var offers = Offers.For(snap, book, plan.Region, o, daemonSets);
        // The pods of the selected nodes and the pending ones: what today's cost pays for (pods bound to nodes that
        // --node-selector hides are neither in today's cost nor in the bound).
        var selected = snap.Nodes.Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
        var (bound, excluded) = LowerBound(pods, offers, snap.Resources, selected);
        return plan with { Costs = new ClusterCosts(today, after, bound, excluded) };
    }

    /// <summary>
    /// The packer's dual lower bound (the LP relaxation's dual, with its gcd, solitary-item, dual-feasible and
    /// anti-affinity strengthenings) over every counted pod as if no node existed: each pod may use the allowed
    /// classes its constraints accept, whose room is what a new node of the class leaves after the DaemonSets
    /// that would land there (as provisioning sees them). Disruption is ignored: budgets, blockers and
    /// do-not-disrupt annotations do not raise it. Pods no allowed class takes are left out and counted.
    /// </summary>
    /// <remarks>
    /// <paramref name="selected"/>: when given, only pods pending or on these nodes count. The pods counted are never copied
    /// (at 150,000 pods each copy was 8.4 MB on the large object heap, two of them at the recommender run's peak): their
    /// items are made in one pass.
    /// </remarks>
    internal static (decimal Bound, int Excluded) LowerBound(PodFacts[] pods, List<Offer> offers, ResourceTable table, IReadOnlySet<string>? selected = null)
    {
        int count = 0;
        foreach (var p in pods) if (Hosted(p, selected)) count++;
        if (count == 0) return (0, 0);
        // One item per distinct (demand, class, group) with its number of pods: the bound sees shapes and their counts only,
        // and an item object per pod was about 10 MB at 150,000 pods, with the instance's 7 MB sort keys on the large
        // object heap, all at the end of the run (see PackingInstance.Counted).
        var shapes = new ShapeIndex(table);
        var index = new Dictionary<(Demand, int, int), int>();
        var items = new List<PackItem>();
        var copies = new List<int>();
        foreach (var p in pods)
        {
            if (!Hosted(p, selected)) continue;
            var (demand, c, group) = shapes.Key(p);
            if (index.TryGetValue((demand, c, group), out int i)) { copies[i]++; continue; }
            index[(demand, c, group)] = items.Count;
            items.Add(new PackItem(items.Count, demand, c, group));
            copies.Add(1);
        }
        var x = PackingInstance.Counted(shapes.Problem(items, offers, [], (_, _) => false), [.. copies]);
        int excluded = x.N - x.PlaceableItems;
        if (x.T == 0 || x.PlaceableItems == 0) return (0, excluded);
        return (DualBound.Compute(x).Reported, excluded);
    }

    private static bool Hosted(in PodFacts p, IReadOnlySet<string>? selected) =>
        !p.IsOverhead && !p.Terminating && (p.Pending || p.Node is { } node && (selected is null || selected.Contains(node)));
}
