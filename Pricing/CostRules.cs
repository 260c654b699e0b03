namespace Karpetrack;

/// <summary>
/// The cost rules, written here and nowhere else: what a node costs, how much of it is idle, each
/// namespace's share of it, and the cluster's sums. /metrics (the collector), the gRPC and JSON API
/// (GetSummary, ExplainNode, ListNodes) and anything later read them here, so they cannot disagree.
/// Amounts are decimal dollars per hour in whole nano-dollars: a sum is then exact in any order (the
/// collector adds per chunk of nodes, the API node by node), and <see cref="Dollars"/> is the one
/// conversion to the double that metrics and messages carry.
/// </summary>
public static class CostRules
{
    /// <summary>What the node costs per hour: max(market, minimum bid) for Spot, the on-demand price for on-demand; null when unpriced (never free).</summary>
    public static decimal? NodePrice(NodeView n, PriceBook book) => book.NodePrice(n.ServerClass, n.CapacityType);

    /// <summary>
    /// The resource that stops more pods landing on the node: the most-allocated of every tracked
    /// resource that has capacity, GPUs included (a node whose GPUs are all taken is not idle, however
    /// little of its CPU is used). Cpu when nothing has capacity.
    /// </summary>
    public static int LimitingResource(NodeView n)
    {
        int best = ResourceTable.Cpu;
        double bestRatio = -1;
        for (int r = 0; r < n.Allocatable.Length; r++)
        {
            if (n.Allocatable[r] <= 0) continue;
            var ratio = n.Utilization(r);
            if (ratio > bestRatio) { bestRatio = ratio; best = r; }
        }
        return best;
    }

    /// <summary>The node's price, idle cost and namespace shares; null when the node is unpriced (or there is no price book).</summary>
    public static NodeCost? Of(NodeView n, PriceBook? book)
    {
        if (book is null || NodePrice(n, book) is not { } price) return null;
        int limiting = LimitingResource(n);
        // Idle: the price times the unallocated share of the limiting resource.
        var idle = Nano(price * (decimal)Math.Clamp(1 - n.Utilization(limiting), 0, 1));
        // A namespace's share: its requests over the node's allocatable on that same resource.
        var shares = new List<(string, decimal)>(n.NamespaceRequests.Count);
        long allocatable = n.Allocatable[limiting];
        if (allocatable > 0)
            foreach (var (ns, requests) in n.NamespaceRequests)
                shares.Add((ns, Nano(price * (decimal)Math.Min(1.0, (double)requests[limiting] / allocatable))));
        return new NodeCost(price, idle, shares.ToArray());
    }

    /// <summary>Dollars per hour as metrics and messages carry them.</summary>
    public static double Dollars(decimal perHour) => (double)perHour;

    // Whole nano-dollars: sums of them stay exact however many nodes are added, in whatever order.
    private static decimal Nano(decimal perHour) => decimal.Round(perHour, 9);
}

/// <summary>One priced node's cost: its price, the idle part of it, and each namespace's share (dollars per hour).</summary>
public sealed record NodeCost(decimal Price, decimal Idle, (string Namespace, decimal Cost)[] Namespaces);

/// <summary>
/// The cluster's (or a part of it's) cost sums: priced nodes' prices and idle costs, the unpriced
/// nodes, and the namespace shares. The collector keeps one per chunk of nodes and adds them up; the
/// API adds the nodes of a snapshot.
/// </summary>
public sealed class CostTotals
{
    private readonly Dictionary<string, decimal> namespaces = new(StringComparer.Ordinal);

    public decimal Cost { get; private set; }
    public decimal Idle { get; private set; }
    public int Unpriced { get; private set; }
    public IReadOnlyDictionary<string, decimal> Namespaces => namespaces;

    /// <summary>The sums over every node of a snapshot.</summary>
    public static CostTotals Of(ClusterSnapshot snap, PriceBook book)
    {
        var totals = new CostTotals();
        foreach (var n in snap.Nodes) totals.Add(CostRules.Of(n, book));
        return totals;
    }

    /// <summary>Adds a node: its cost when priced, else one more unpriced node (left out of costs, never counted as free).</summary>
    public void Add(NodeCost? node)
    {
        if (node is null) { Unpriced++; return; }
        Cost += node.Price;
        Idle += node.Idle;
        foreach (var (ns, share) in node.Namespaces) namespaces[ns] = namespaces.GetValueOrDefault(ns) + share;
    }

    public void Add(CostTotals part)
    {
        Cost += part.Cost;
        Idle += part.Idle;
        Unpriced += part.Unpriced;
        foreach (var (ns, share) in part.namespaces) namespaces[ns] = namespaces.GetValueOrDefault(ns) + share;
    }
}
