using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.IO.Pipelines;
using System.Text;

namespace Karpetrack;

public enum MetricType { Gauge, Counter, Histogram }

/// <summary>One metric family: name, type, help and the labels its samples carry.</summary>
public sealed record MetricFamily(string Name, MetricType Type, string Help, params string[] Labels)
{
    public string TypeName => Type switch { MetricType.Counter => "counter", MetricType.Histogram => "histogram", _ => "gauge" };
}

/// <summary>
/// The cluster families, declared once: what the collector's chunked store renders from the model, the
/// price book and the plan. The service's own telemetry is declared by the components that own it, on
/// their <see cref="Telemetry"/>. README's metric table is checked against both.
/// </summary>
public static class Families
{
    public static readonly MetricFamily NodeAllocated = new("karpetrack_node_allocated", MetricType.Gauge,
        "Requests of the pods counted on the node (bound, not terminal, terminating included), in base units (cores, bytes).", "node", "resource");
    public static readonly MetricFamily NodeAllocatable = new("karpetrack_node_allocatable", MetricType.Gauge,
        "Allocatable capacity of the node, in base units (cores, bytes).", "node", "resource");
    public static readonly MetricFamily NodeUtilization = new("karpetrack_node_utilization_ratio", MetricType.Gauge,
        "Allocated over allocatable for the node (0 when nothing is allocatable; can exceed 1).", "node", "resource");
    public static readonly MetricFamily NodeDaemonSetOverhead = new("karpetrack_node_daemonset_overhead", MetricType.Gauge,
        "Requests of DaemonSet and mirror (static) pods on the node, in base units.", "node", "resource");
    public static readonly MetricFamily NodeInfo = new("karpetrack_node_info", MetricType.Gauge,
        "Node facts: Spot server class, pool, capacity type, region, schedulable and ready; always 1.",
        "node", "server_class", "pool", "capacity_type", "region", "schedulable", "ready");
    public static readonly MetricFamily NodePods = new("karpetrack_node_pods", MetricType.Gauge,
        "Pods counted on the node (bound, not terminal).", "node");

    public static readonly MetricFamily ClusterAllocated = new("karpetrack_cluster_allocated", MetricType.Gauge,
        "Sum of node allocated over all selected nodes (cordoned and NotReady included), in base units.", "resource");
    public static readonly MetricFamily ClusterAllocatable = new("karpetrack_cluster_allocatable", MetricType.Gauge,
        "Sum of node allocatable over all selected nodes, in base units.", "resource");
    public static readonly MetricFamily ClusterUtilization = new("karpetrack_cluster_utilization_ratio", MetricType.Gauge,
        "Cluster allocated over cluster allocatable.", "resource");
    public static readonly MetricFamily ClusterDaemonSetOverhead = new("karpetrack_cluster_daemonset_overhead", MetricType.Gauge,
        "Sum of DaemonSet and mirror pod requests over all selected nodes, in base units.", "resource");
    public static readonly MetricFamily ClusterNodes = new("karpetrack_cluster_nodes", MetricType.Gauge,
        "Selected nodes by state: ready, not_ready, cordoned (ready but unschedulable), deleting.", "state");

    public static readonly MetricFamily GroupAllocated = new("karpetrack_group_allocated", MetricType.Gauge,
        "Sum of node allocated over the nodes of a label group value, in base units.", "label_group", "label_group_value", "resource");
    public static readonly MetricFamily GroupAllocatable = new("karpetrack_group_allocatable", MetricType.Gauge,
        "Sum of node allocatable over the nodes of a label group value, in base units.", "label_group", "label_group_value", "resource");
    public static readonly MetricFamily GroupUtilization = new("karpetrack_group_utilization_ratio", MetricType.Gauge,
        "Group allocated over group allocatable (capacity-weighted).", "label_group", "label_group_value", "resource");
    public static readonly MetricFamily GroupNodes = new("karpetrack_group_nodes", MetricType.Gauge,
        "Nodes in a label group value.", "label_group", "label_group_value");

    public static readonly MetricFamily PendingPods = new("karpetrack_pending_pods", MetricType.Gauge,
        "Pods the scheduler could not place (PodScheduled=False, reason Unschedulable): demand, not allocation.");
    public static readonly MetricFamily PendingRequests = new("karpetrack_pending_requests", MetricType.Gauge,
        "Summed effective requests of the pending unschedulable pods, in base units.", "resource");


    public static readonly MetricFamily NodePrice = new("karpetrack_node_price_dollars_per_hour", MetricType.Gauge,
        "What the node costs per hour: max(market, minimum bid) for Spot, the on-demand price for on-demand nodes. Absent when unpriced.", "node");
    public static readonly MetricFamily NodeIdleCost = new("karpetrack_node_idle_cost_dollars_per_hour", MetricType.Gauge,
        "Node price times the unallocated share of its most-allocated resource (every tracked resource, GPUs included).", "node");
    public static readonly MetricFamily ClusterCost = new("karpetrack_cluster_cost_dollars_per_hour", MetricType.Gauge,
        "Sum of the prices of all priced selected nodes.");
    public static readonly MetricFamily ClusterIdleCost = new("karpetrack_cluster_idle_cost_dollars_per_hour", MetricType.Gauge,
        "Sum of node idle cost over all priced selected nodes.");
    public static readonly MetricFamily GroupCost = new("karpetrack_group_cost_dollars_per_hour", MetricType.Gauge,
        "Sum of node prices over the priced nodes of a label group value.", "label_group", "label_group_value");
    public static readonly MetricFamily NamespaceCost = new("karpetrack_namespace_cost_dollars_per_hour", MetricType.Gauge,
        "Each counted pod's share of its node's price (its requests over allocatable on the node's most-allocated resource), summed per namespace.", "namespace");
    public static readonly MetricFamily UnpricedNodes = new("karpetrack_unpriced_nodes", MetricType.Gauge,
        "Selected nodes whose server class (or capacity type) has no known price; they are left out of costs, never counted as free.");
    public static readonly MetricFamily ServerClassInfo = new("karpetrack_serverclass_info", MetricType.Gauge,
        "Spot server class shapes from the price book; always 1.", "server_class", "region", "category", "cpu", "memory_bytes");
    public static readonly MetricFamily ServerClassPrice = new("karpetrack_serverclass_price_dollars_per_hour", MetricType.Gauge,
        "Spot server class prices: market, min_bid, p20, p50, p80, on_demand (where known).", "server_class", "region", "category", "price");


    public static readonly MetricFamily Recommendations = new("karpetrack_recommendations", MetricType.Gauge,
        "Current recommendations by type: provision, replace, consolidate, delete_empty.", "type");
    public static readonly MetricFamily RecommendationSavings = new("karpetrack_recommendation_savings_dollars_per_hour", MetricType.Gauge,
        "Hourly savings of the current recommendations by type (provisioning adds cost and saves nothing).", "type");
    public static readonly MetricFamily RecommendedNodes = new("karpetrack_recommended_nodes", MetricType.Gauge,
        "New nodes the current provisioning recommendation would buy, by server class.", "server_class");
    public static readonly MetricFamily ProvisioningCost = new("karpetrack_provisioning_cost_dollars_per_hour", MetricType.Gauge,
        "Hourly cost of the new nodes recommended for the pending pods.");
    public static readonly MetricFamily ProvisioningLowerBound = new("karpetrack_provisioning_lower_bound_dollars_per_hour", MetricType.Gauge,
        "A proven lower bound on the hourly cost of hosting the pending pods on new nodes; the gap to the cost is the room left.");
    public static readonly MetricFamily ClusterCostAfterRecommendations = new("karpetrack_cluster_cost_after_recommendations_dollars_per_hour", MetricType.Gauge,
        "What the priced nodes would cost once every current recommendation is carried out: today's cost minus every recommendation's saving, plus the new nodes for pending pods.");
    public static readonly MetricFamily ClusterCostLowerBound = new("karpetrack_cluster_cost_lower_bound_dollars_per_hour", MetricType.Gauge,
        "A proven lower bound on hosting every current pod (placed and pending) on new nodes of the allowed classes, ignoring disruption: the cheapest this cluster could be.");
    public static readonly MetricFamily ClusterCostLowerBoundExcludedPods = new("karpetrack_cluster_cost_lower_bound_excluded_pods", MetricType.Gauge,
        "Pods no allowed server class can take (selectors, taints, size), left out of the lower bound.");
    public static readonly MetricFamily NodeDisruptionBlocked = new("karpetrack_node_disruption_blocked", MetricType.Gauge,
        "1 for each reason a node is not recommended for removal or replacement (blockers, or no cheaper placement).", "node", "reason");

    // Declared last: static fields initialize in order, so the list must come after every family.
    public static readonly MetricFamily[] All =
    [
        NodeAllocated, NodeAllocatable, NodeUtilization, NodeDaemonSetOverhead, NodeInfo, NodePods,
        ClusterAllocated, ClusterAllocatable, ClusterUtilization, ClusterDaemonSetOverhead, ClusterNodes,
        GroupAllocated, GroupAllocatable, GroupUtilization, GroupNodes,
        PendingPods, PendingRequests,
        NodePrice, NodeIdleCost, ClusterCost, ClusterIdleCost, GroupCost, NamespaceCost, UnpricedNodes,
        ServerClassInfo, ServerClassPrice,
        Recommendations, RecommendationSavings, RecommendedNodes, ProvisioningCost, ProvisioningLowerBound,
        ClusterCostAfterRecommendations, ClusterCostLowerBound, ClusterCostLowerBoundExcludedPods, NodeDisruptionBlocked,
    ];
}

/// <summary>
/// Writes the Prometheus text exposition (0.0.4) into any byte buffer: HELP/TYPE headers, label
/// escaping, and numbers formatted without float noise where the value is an exact integer or
/// a millicore count.
/// </summary>
public readonly struct Exposition(IBufferWriter<byte> output)
{
    private readonly IBufferWriter<byte> output = output;

    public void Header(MetricFamily f)
    {
        Raw("# HELP "u8); Ascii(f.Name); Raw(" "u8); HelpText(f.Help); Raw("\n# TYPE "u8);
        Ascii(f.Name); Raw(" "u8); Ascii(f.TypeName); Raw("\n"u8);
    }

    public void Begin(MetricFamily f, string label0, string value0)
    {
        Ascii(f.Name); Raw("{"u8); Ascii(label0); Raw("=\""u8); LabelValue(value0); Raw("\""u8);
    }

    public void Label(string name, string value)
    {
        Raw(","u8); Ascii(name); Raw("=\""u8); LabelValue(value); Raw("\""u8);
    }

    public void EndLabels() => Raw("} "u8);

    public void NameOnly(MetricFamily f) { Ascii(f.Name); Raw(" "u8); }

    public void Integer(long v) { Span<byte> b = output.GetSpan(24); Utf8Formatter.TryFormat(v, b, out int n); output.Advance(n); Raw("\n"u8); }

    /// <summary>A stored resource value in its base unit: millicores become exact decimal cores.</summary>
    public void Stored(ResourceTable table, int resource, long v)
    {
        if (!table.IsMilli(resource)) { Integer(v); return; }
        Milli(v);
    }

    public void Milli(long milli)
    {
        Span<byte> b = output.GetSpan(32);
        int n = 0;
        if (milli < 0) { b[n++] = (byte)'-'; milli = -milli; }
        Utf8Formatter.TryFormat(milli / 1000, b[n..], out int w); n += w;
        long frac = milli % 1000;
        if (frac != 0)
        {
            b[n++] = (byte)'.';
            int d0 = (int)(frac / 100), d1 = (int)(frac / 10 % 10), d2 = (int)(frac % 10);
            b[n++] = (byte)('0' + d0);
            if (d1 != 0 || d2 != 0) b[n++] = (byte)('0' + d1);
            if (d2 != 0) b[n++] = (byte)('0' + d2);
        }
        b[n++] = (byte)'\n';
        output.Advance(n);
    }

    public void Double(double v)
    {
        if (double.IsNaN(v)) Raw("NaN\n"u8);
        else if (double.IsPositiveInfinity(v)) Raw("+Inf\n"u8);
        else if (double.IsNegativeInfinity(v)) Raw("-Inf\n"u8);
        else
        {
            Span<byte> b = output.GetSpan(40);
            v.TryFormat(b, out int n, "R", CultureInfo.InvariantCulture);
            b[n++] = (byte)'\n';
            output.Advance(n);
        }
    }

    public void Raw(ReadOnlySpan<byte> bytes) => output.Write(bytes);

    private void Ascii(string s)
    {
        var b = output.GetSpan(s.Length);
        for (int i = 0; i < s.Length; i++) b[i] = (byte)s[i];
        output.Advance(s.Length);
    }

    private void LabelValue(string s)
    {
        int max = Encoding.UTF8.GetMaxByteCount(s.Length) * 2;
        var b = output.GetSpan(max);
        int n = 0;
        foreach (var rune in s.EnumerateRunes())
        {
            switch (rune.Value)
            {
                case '\\': b[n++] = (byte)'\\'; b[n++] = (byte)'\\'; break;
                case '"': b[n++] = (byte)'\\'; b[n++] = (byte)'"'; break;
                case '\n': b[n++] = (byte)'\\'; b[n++] = (byte)'n'; break;
                default: n += rune.EncodeToUtf8(b[n..]); break;
            }
        }
        output.Advance(n);
    }

    private void HelpText(string s)
    {
        var b = output.GetSpan(Encoding.UTF8.GetMaxByteCount(s.Length) * 2);
        int n = 0;
        foreach (var rune in s.EnumerateRunes())
        {
            switch (rune.Value)
            {
                case '\\': b[n++] = (byte)'\\'; b[n++] = (byte)'\\'; break;
                case '\n': b[n++] = (byte)'\\'; b[n++] = (byte)'n'; break;
                default: n += rune.EncodeToUtf8(b[n..]); break;
            }
        }
        output.Advance(n);
    }
}

/// <summary>
/// Assembles /metrics: the cluster families from the model, the current price book and the plan,
/// then the service's own telemetry (<see cref="Telemetry"/>). The cluster part is rendered the
/// kube-state-metrics way: each node's lines are rendered once per change of that node (or of the
/// price book) and cached; nodes are grouped in chunks of 64 whose concatenated blocks and partial
/// sums (cluster, groups, namespaces, cost) are cached too. A scrape therefore writes a few hundred
/// cached byte blocks and adds up about 80 chunk sums; it never walks pods and barely walks nodes.
/// </summary>
public sealed class Collector
{
    private const int ChunkSize = 64;

    private static readonly MetricFamily[] NodeFamilies =
    [
        Families.NodeAllocated, Families.NodeAllocatable, Families.NodeUtilization, Families.NodeDaemonSetOverhead,
        Families.NodeInfo, Families.NodePods, Families.NodePrice, Families.NodeIdleCost,
    ];

    private static readonly byte[][] NodeFamilyHeaders = NodeFamilies.Select(f =>
    {
        var header = new ArrayBufferWriter<byte>(256);
        new Exposition(header).Header(f);
        return header.WrittenSpan.ToArray();
    }).ToArray();

    private readonly ClusterModel model;
    private readonly IReadOnlyList<IReadOnlyList<string>> labelGroups;
    private readonly PriceFeed? prices;
    private readonly RecommenderLoop? recommender;
    private readonly Telemetry? telemetry;
    private readonly object cacheGate = new();
    private Dictionary<string, CachedNode> nodeCache = new(StringComparer.Ordinal);
    private Chunk[] chunks = [];
    private readonly ArrayBufferWriter<byte> scratch = new(4096);   // a node's lines as they are rendered, under cacheGate
    private (long Version, PriceBook? Book) cachedKey = (-1, null);

    /// <param name="prices">Read for the current price book only (the cost and catalogue families).</param>
    /// <param name="recommender">Read for the current plan only (the recommendation families).</param>
    /// <param name="telemetry">The service's own families, written after the cluster's.</param>
    public Collector(ClusterModel model, IReadOnlyList<IReadOnlyList<string>> labelGroups, PriceFeed? prices = null,
        RecommenderLoop? recommender = null, Telemetry? telemetry = null)
    {
        this.model = model;
        this.labelGroups = labelGroups;
        this.prices = prices;
        this.recommender = recommender;
        this.telemetry = telemetry;
    }

    /// <summary>One node's cached lines and the derived facts the sums need.</summary>
    /// <remarks>
    /// The lines are held once: freshly rendered they are one array of their own (<see cref="Fresh"/>, every family's
    /// block in turn), and once their chunk is built they are the node's stretch of the chunk's concatenated blocks,
    /// found through the chunk's offsets (<see cref="BuildChunk"/> moves them, under the cache's lock, the only place
    /// that reads them). Holding both doubled the cache (6 MB more at 5,000 nodes); a slice per family per node
    /// (a ReadOnlyMemory array each) cost 152 bytes a node more than the offsets.
    /// </remarks>
    private sealed class CachedNode(NodeView view, PriceBook? book, byte[] fresh, int[] freshEnds, NodeCost? cost, string[] groupKeys)
    {
        public readonly NodeView View = view;
        public readonly PriceBook? Book = book;
        public readonly NodeCost? Cost = cost;      // null when unpriced
        public readonly string[] GroupKeys = groupKeys;   // this node's label_group_value per --label-group
        public byte[]? Fresh = fresh;               // the lines as rendered, until a chunk takes them
        public int[]? FreshEnds = freshEnds;        // where each family's block ends in Fresh
        public Chunk? Home;                         // the chunk that holds the lines, once built
        public int Slot;                            // this node's position in Home

        /// <summary>This node's lines of one family.</summary>
        public ReadOnlySpan<byte> Block(int family)
        {
            if (Fresh is { } fresh)
            {
                int start = family == 0 ? 0 : FreshEnds![family - 1];
                return fresh.AsSpan(start, FreshEnds![family] - start);
            }
            var home = Home!;
            int at = family * home.Nodes.Length + Slot;
            int from = Slot == 0 ? 0 : home.Ends[at - 1];
            return home.Families[family].AsSpan(from, home.Ends[at] - from);
        }
    }

    /// <summary>Up to 64 consecutive nodes: their blocks concatenated per family, and their partial sums.</summary>
    private sealed class Chunk
    {
        public required CachedNode[] Nodes { get; init; }
        public required byte[][] Families { get; init; }
        public required int[] Ends { get; init; }   // [family * Nodes.Length + i]: where node i's block ends in Families[family]
        public required long[] Allocated { get; init; }
        public required long[] Allocatable { get; init; }
        public required long[] Overhead { get; init; }
        public required int[] States { get; init; }
        public required Dictionary<string, GroupTally>[] Groups { get; init; }
        public required CostTotals Costs { get; init; }
    }

    private sealed class GroupTally(int resources)
    {
        public readonly long[] Allocated = new long[resources];
        public readonly long[] Allocatable = new long[resources];
        public int Nodes;
        public decimal Cost;

        public void Add(GroupTally o)
        {
            for (int i = 0; i < Allocated.Length; i++) { Allocated[i] += o.Allocated[i]; Allocatable[i] += o.Allocatable[i]; }
            Nodes += o.Nodes;
            Cost += o.Cost;
        }
    }

    /// <summary>Renders the cluster families as a list of byte segments (cached chunk blocks plus small rendered parts).</summary>
    public List<ReadOnlyMemory<byte>> RenderSegments()
    {
        var snap = model.Snapshot();
        var book = prices?.Current;
        var current = Chunks(snap, book);
        var segments = new List<ReadOnlyMemory<byte>>(NodeFamilies.Length * (current.Length + 1) + 8);
        var small = new ArrayBufferWriter<byte>(64 * 1024);
        for (int f = 0; f < NodeFamilies.Length; f++)
        {
            if (book is null && (NodeFamilies[f] == Families.NodePrice || NodeFamilies[f] == Families.NodeIdleCost)) continue;
            segments.Add(NodeFamilyHeaders[f]);
            foreach (var c in current) if (c.Families[f].Length > 0) segments.Add(c.Families[f]);
        }
        var w = new Exposition(small);
        RenderCluster(w, snap.Resources, current);
        RenderGroups(w, snap.Resources, current, book is not null);
        RenderPending(w, snap);
        if (book is not null) RenderCosts(w, current);
        segments.Add(small.WrittenMemory);
        // What changes only with the price book or the plan is rendered once per book and per plan:
        // the plan alone names every blocked node, and rendering it per scrape allocated enough to
        // bring gen2 collections into the scrape path.
        if (book is not null) segments.Add(Block(ref catalogueBlock, book, x => RenderCatalogue(x, book)));
        // Before the first plan the plan's families are absent, not 0: "not computed yet" is not "nothing to do".
        if (recommender is not null && recommender.LastRun is not null)
        {
            var plan = recommender.Current;
            segments.Add(Block(ref planBlock, plan, x => RenderPlan(x, plan)));
        }
        return segments;
    }

    /// <summary>A rendered block and what it was rendered from (compared by reference: both are immutable).</summary>
    private sealed record CachedBlock(object Key, byte[] Bytes);

    private CachedBlock? catalogueBlock, planBlock;

    private static byte[] Block(ref CachedBlock? cache, object key, Action<Exposition> render)
    {
        var cached = Volatile.Read(ref cache);
        if (cached is not null && ReferenceEquals(cached.Key, key)) return cached.Bytes;
        var buffer = new ArrayBufferWriter<byte>(16 * 1024);
        render(new Exposition(buffer));
        var fresh = new CachedBlock(key, buffer.WrittenSpan.ToArray());
        Volatile.Write(ref cache, fresh);   // two scrapes racing here just render it twice
        return fresh.Bytes;
    }

    /// <summary>Renders the cluster families into <paramref name="output"/> (the service's own telemetry is not included).</summary>
    public void Render(IBufferWriter<byte> output)
    {
        foreach (var s in RenderSegments()) output.Write(s.Span);
    }

    public byte[] RenderToArray()
    {
        var buffer = new ArrayBufferWriter<byte>(64 * 1024);
        Render(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Writes the whole exposition to a stream: the cluster families straight from the cached blocks, then the telemetry.</summary>
    public async Task WriteAsync(Stream body, CancellationToken ct)
    {
        foreach (var segment in RenderSegments())
            await body.WriteAsync(segment, ct).ConfigureAwait(false);
        if (telemetry is not null) await telemetry.WriteAsync(body, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes the whole exposition to an HTTP response with its Content-Length set (no chunk framing, and
    /// the client can size its buffer once), flushing about every 512 KiB rather than per block. The
    /// telemetry, a few kilobytes, is rendered first so that the length is known.
    /// </summary>
    public async Task WriteAsync(HttpResponse response, CancellationToken ct)
    {
        using var own = new MemoryStream(16 * 1024);
        if (telemetry is not null) await telemetry.WriteAsync(own, ct).ConfigureAwait(false);
        var segments = RenderSegments();
        long length = own.Length;
        foreach (var s in segments) length += s.Length;
        response.ContentLength = length;
        var body = response.BodyWriter;
        long pending = 0;
        foreach (var segment in segments)
        {
            body.Write(segment.Span);
            pending += segment.Length;
            if (pending >= 512 * 1024)
            {
                await body.FlushAsync(ct).ConfigureAwait(false);
                pending = 0;
            }
        }
        body.Write(own.GetBuffer().AsSpan(0, (int)own.Length));
        await body.FlushAsync(ct).ConfigureAwait(false);
    }

    private Chunk[] Chunks(ClusterSnapshot snap, PriceBook? book)
    {
        lock (cacheGate)
        {
            if (cachedKey.Version == snap.Version && ReferenceEquals(cachedKey.Book, book)) return chunks;
            var next = new Chunk[(snap.Nodes.Length + ChunkSize - 1) / ChunkSize];
            bool shifted = false;
            for (int c = 0; c < next.Length; c++)
            {
                int start = c * ChunkSize, count = Math.Min(ChunkSize, snap.Nodes.Length - start);
                var old = c < chunks.Length ? chunks[c].Nodes : [];
                var members = new CachedNode[count];
                bool same = old.Length == count;
                for (int i = 0; i < count; i++)
                {
                    var v = snap.Nodes[start + i];
                    CachedNode? n = null;
                    // Usually the node sits where it sat last time; only after nodes come or go do
                    // positions shift and the by-name cache is needed.
                    if (i < old.Length && ReferenceEquals(old[i].Book, book))
                    {
                        if (ReferenceEquals(old[i].View, v)) n = old[i];
                        else if (old[i].View.Name != v.Name) shifted = true;
                    }
                    else if (i >= old.Length) shifted = true;
                    if (n is null && shifted && nodeCache.TryGetValue(v.Name, out var byName) && ReferenceEquals(byName.View, v) && ReferenceEquals(byName.Book, book))
                        n = byName;
                    if (n is null)
                    {
                        n = RenderNode(snap.Resources, v, book, labelGroups, scratch);
                        // The by-name entry follows at once: a stale one would keep its old chunk's blocks alive.
                        nodeCache[v.Name] = n;
                    }
                    members[i] = n;
                    if (same) same = ReferenceEquals(old[i], n);
                }
                next[c] = same ? chunks[c] : BuildChunk(snap.Resources, members);
            }
            if (shifted || next.Length != chunks.Length || nodeCache.Count != snap.Nodes.Length)
            {
                nodeCache = new Dictionary<string, CachedNode>(snap.Nodes.Length, StringComparer.Ordinal);
                foreach (var c in next) foreach (var n in c.Nodes) nodeCache[n.View.Name] = n;
            }
            chunks = next;
            cachedKey = (snap.Version, book);
            return next;
        }
    }

    /// <summary>The bytes of rendered lines the cache holds (distinct arrays behind the chunks' blocks and the nodes' lines).</summary>
    internal long CachedLineBytes()
    {
        lock (cacheGate)
        {
            var seen = new HashSet<byte[]>(ReferenceEqualityComparer.Instance);
            long total = 0;
            void Count(ReadOnlyMemory<byte> m)
            {
                if (System.Runtime.InteropServices.MemoryMarshal.TryGetArray(m, out var a) && a.Array is { } array && seen.Add(array)) total += array.Length;
            }
            void Held(CachedNode n)
            {
                if (n.Fresh is not null) Count(n.Fresh);
                if (n.Home is not null) foreach (var f in n.Home.Families) Count(f);
            }
            foreach (var c in chunks)
            {
                foreach (var f in c.Families) Count(f);
                foreach (var n in c.Nodes) Held(n);
            }
            foreach (var n in nodeCache.Values) Held(n);
            return total;
        }
    }

    private Chunk BuildChunk(ResourceTable t, CachedNode[] members)
    {
        var families = new byte[NodeFamilies.Length][];
        var ends = new int[NodeFamilies.Length * members.Length];
        for (int f = 0; f < families.Length; f++)
        {
            int length = 0;
            foreach (var n in members) length += n.Block(f).Length;
            var block = new byte[length];
            int at = 0;
            for (int i = 0; i < members.Length; i++)
            {
                var lines = members[i].Block(f);
                lines.CopyTo(block.AsSpan(at));
                at += lines.Length;
                ends[f * members.Length + i] = at;
            }
            families[f] = block;
        }
        var chunk = new Chunk
        {
            Nodes = members,
            Families = families,
            Ends = ends,
            Allocated = new long[t.Count],
            Allocatable = new long[t.Count],
            Overhead = new long[t.Count],
            States = new int[4],
            Groups = labelGroups.Select(_ => new Dictionary<string, GroupTally>(StringComparer.Ordinal)).ToArray(),
            Costs = new CostTotals(),
        };
        foreach (var n in members)
        {
            var v = n.View;
            for (int i = 0; i < t.Count; i++)
            {
                chunk.Allocated[i] += v.Allocated[i];
                chunk.Allocatable[i] += v.Allocatable[i];
                chunk.Overhead[i] += v.DaemonSetOverhead[i];
            }
            chunk.States[(int)ClusterSnapshot.StateOf(v)]++;
            for (int g = 0; g < labelGroups.Count; g++)
            {
                if (!chunk.Groups[g].TryGetValue(n.GroupKeys[g], out var tally)) chunk.Groups[g][n.GroupKeys[g]] = tally = new GroupTally(t.Count);
                for (int i = 0; i < t.Count; i++) { tally.Allocated[i] += v.Allocated[i]; tally.Allocatable[i] += v.Allocatable[i]; }
                tally.Nodes++;
                tally.Cost += n.Cost?.Price ?? 0;
            }
            chunk.Costs.Add(n.Cost);
        }
        // Every member's lines are now read from this chunk (the same bytes, held once): only after all families
        // were copied, since a member's old home may be read until then.
        for (int i = 0; i < members.Length; i++)
        {
            var n = members[i];
            n.Home = chunk;
            n.Slot = i;
            n.Fresh = null;
            n.FreshEnds = null;
        }
        return chunk;
    }

    /// <param name="buf">Scratch space, reused (under the cache's lock): the node keeps an exact copy.</param>
    private static CachedNode RenderNode(ResourceTable table, NodeView n, PriceBook? book, IReadOnlyList<IReadOnlyList<string>> labelGroups, ArrayBufferWriter<byte> buf)
    {
        var ends = new int[NodeFamilies.Length];
        buf.ResetWrittenCount();
        var w = new Exposition(buf);


        void PerResource(MetricFamily f, long[] values)
        {
            foreach (var r in table.Exported)
            {
                w.Begin(f, "node", n.Name); w.Label("resource", table.Name(r)); w.EndLabels();
                w.Stored(table, r, values[r]);
            }
        }

        PerResource(Families.NodeAllocated, n.Allocated);
        ends[0] = buf.WrittenCount;
        PerResource(Families.NodeAllocatable, n.Allocatable);
        ends[1] = buf.WrittenCount;
        foreach (var r in table.Exported)
        {
            w.Begin(Families.NodeUtilization, "node", n.Name); w.Label("resource", table.Name(r)); w.EndLabels();
            w.Double(n.Utilization(r));
        }
        ends[2] = buf.WrittenCount;
        PerResource(Families.NodeDaemonSetOverhead, n.DaemonSetOverhead);
        ends[3] = buf.WrittenCount;

        w.Begin(Families.NodeInfo, "node", n.Name);
        w.Label("server_class", n.ServerClass);
        w.Label("pool", n.Pool);
        w.Label("capacity_type", n.CapacityType);
        w.Label("region", n.Region);
        w.Label("schedulable", n.Schedulable ? "true" : "false");
        w.Label("ready", n.Ready ? "true" : "false");
        w.EndLabels(); w.Integer(1);
        ends[4] = buf.WrittenCount;

        w.Begin(Families.NodePods, "node", n.Name); w.EndLabels(); w.Integer(n.Pods);
        ends[5] = buf.WrittenCount;

        var cost = CostRules.Of(n, book);
        if (cost is not null)
        {
            w.Begin(Families.NodePrice, "node", n.Name); w.EndLabels(); w.Double(CostRules.Dollars(cost.Price));
            ends[6] = buf.WrittenCount;
            w.Begin(Families.NodeIdleCost, "node", n.Name); w.EndLabels(); w.Double(CostRules.Dollars(cost.Idle));
            ends[7] = buf.WrittenCount;
        }
        else
        {
            ends[6] = ends[7] = buf.WrittenCount;
        }

        var keys = labelGroups.Count == 0 ? [] : new string[labelGroups.Count];
        for (int g = 0; g < labelGroups.Count; g++)
        {
            var group = labelGroups[g];
            var values = new string[group.Count];
            for (int k = 0; k < group.Count; k++) values[k] = n.Labels.TryGetValue(group[k], out var v) ? v : "<none>";
            keys[g] = string.Join(',', values);
        }
        return new CachedNode(n, book, buf.WrittenSpan.ToArray(), ends, cost, keys);
    }

    private static void RenderCluster(Exposition w, ResourceTable t, Chunk[] chunks)
    {
        var allocated = new long[t.Count];
        var allocatable = new long[t.Count];
        var overhead = new long[t.Count];
        var states = new int[4];
        foreach (var c in chunks)
        {
            for (int i = 0; i < t.Count; i++)
            {
                allocated[i] += c.Allocated[i];
                allocatable[i] += c.Allocatable[i];
                overhead[i] += c.Overhead[i];
            }
            for (int s = 0; s < states.Length; s++) states[s] += c.States[s];
        }
        PerResource(w, t, Families.ClusterAllocated, allocated);
        PerResource(w, t, Families.ClusterAllocatable, allocatable);
        w.Header(Families.ClusterUtilization);
        foreach (var r in t.Exported)
        {
            w.Begin(Families.ClusterUtilization, "resource", t.Name(r)); w.EndLabels();
            w.Double(allocatable[r] <= 0 ? 0 : (double)allocated[r] / allocatable[r]);
        }
        PerResource(w, t, Families.ClusterDaemonSetOverhead, overhead);
        w.Header(Families.ClusterNodes);
        string[] names = ["ready", "not_ready", "cordoned", "deleting"];
        for (int s = 0; s < names.Length; s++)
        {
            w.Begin(Families.ClusterNodes, "state", names[s]); w.EndLabels(); w.Integer(states[s]);
        }
    }

    private static void PerResource(Exposition w, ResourceTable t, MetricFamily f, long[] values)
    {
        w.Header(f);
        foreach (var r in t.Exported)
        {
            w.Begin(f, "resource", t.Name(r)); w.EndLabels(); w.Stored(t, r, values[r]);
        }
    }

    private void RenderGroups(Exposition w, ResourceTable t, Chunk[] chunks, bool priced)
    {
        var groups = new List<(string Group, List<KeyValuePair<string, GroupTally>> Values)>();
        for (int g = 0; g < labelGroups.Count; g++)
        {
            var byValue = new Dictionary<string, GroupTally>(StringComparer.Ordinal);
            foreach (var c in chunks)
            {
                foreach (var (key, part) in c.Groups[g])
                {
                    if (!byValue.TryGetValue(key, out var tally)) byValue[key] = tally = new GroupTally(t.Count);
                    tally.Add(part);
                }
            }
            groups.Add((string.Join(',', labelGroups[g]), byValue.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList()));
        }

        void Emit(MetricFamily f, Action<Exposition, GroupTally, int> value, bool perResource)
        {
            w.Header(f);
            foreach (var (group, values) in groups)
            {
                foreach (var (val, tally) in values)
                {
                    if (!perResource)
                    {
                        w.Begin(f, "label_group", group); w.Label("label_group_value", val); w.EndLabels();
                        value(w, tally, -1);
                        continue;
                    }
                    foreach (var r in t.Exported)
                    {
                        w.Begin(f, "label_group", group); w.Label("label_group_value", val); w.Label("resource", t.Name(r)); w.EndLabels();
                        value(w, tally, r);
                    }
                }
            }
        }

        Emit(Families.GroupAllocated, (x, g, r) => x.Stored(t, r, g.Allocated[r]), true);
        Emit(Families.GroupAllocatable, (x, g, r) => x.Stored(t, r, g.Allocatable[r]), true);
        Emit(Families.GroupUtilization, (x, g, r) => x.Double(g.Allocatable[r] <= 0 ? 0 : (double)g.Allocated[r] / g.Allocatable[r]), true);
        Emit(Families.GroupNodes, (x, g, _) => x.Integer(g.Nodes), false);
        if (priced) Emit(Families.GroupCost, (x, g, _) => x.Double(CostRules.Dollars(g.Cost)), false);
    }

    private static void RenderPending(Exposition w, ClusterSnapshot snap)
    {
        w.Header(Families.PendingPods);
        w.NameOnly(Families.PendingPods); w.Integer(snap.PendingPods);
        PerResource(w, snap.Resources, Families.PendingRequests, snap.PendingRequests);
    }

    private static void RenderCosts(Exposition w, Chunk[] chunks)
    {
        var totals = new CostTotals();
        foreach (var c in chunks) totals.Add(c.Costs);
        w.Header(Families.ClusterCost); w.NameOnly(Families.ClusterCost); w.Double(CostRules.Dollars(totals.Cost));
        w.Header(Families.ClusterIdleCost); w.NameOnly(Families.ClusterIdleCost); w.Double(CostRules.Dollars(totals.Idle));
        w.Header(Families.UnpricedNodes); w.NameOnly(Families.UnpricedNodes); w.Integer(totals.Unpriced);
        w.Header(Families.NamespaceCost);
        foreach (var (ns, value) in totals.Namespaces.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            w.Begin(Families.NamespaceCost, "namespace", ns); w.EndLabels(); w.Double(CostRules.Dollars(value));
        }
    }

    private static void RenderCatalogue(Exposition w, PriceBook book)
    {
        var ordered = book.Classes.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        w.Header(Families.ServerClassInfo);
        foreach (var (name, pc) in ordered)
        {
            w.Begin(Families.ServerClassInfo, "server_class", name);
            w.Label("region", pc.Class.Region);
            w.Label("category", pc.Class.Category);
            w.Label("cpu", pc.Class.Cpu.ToString(CultureInfo.InvariantCulture));
            w.Label("memory_bytes", pc.Class.MemoryBytes.ToString(CultureInfo.InvariantCulture));
            w.EndLabels(); w.Integer(1);
        }
        w.Header(Families.ServerClassPrice);
        foreach (var (name, pc) in ordered)
        {
            var p = pc.Prices;
            Price(w, name, pc, "market", p.Market);
            Price(w, name, pc, "min_bid", p.MinBid);
            Price(w, name, pc, "p20", p.P20);
            Price(w, name, pc, "p50", p.P50);
            Price(w, name, pc, "p80", p.P80);
            Price(w, name, pc, "on_demand", p.OnDemand);
        }

        static void Price(Exposition w, string name, PricedClass pc, string kind, decimal? value)
        {
            if (value is not { } v) return;
            w.Begin(Families.ServerClassPrice, "server_class", name);
            w.Label("region", pc.Class.Region); w.Label("category", pc.Class.Category); w.Label("price", kind);
            w.EndLabels(); w.Double((double)v);
        }
    }

    private static readonly (RecommendationType Type, string Label)[] TypeLabels =
        [(RecommendationType.Provision, "provision"), (RecommendationType.Replace, "replace"), (RecommendationType.Consolidate, "consolidate"), (RecommendationType.DeleteEmpty, "delete_empty")];

    /// <summary>A recommendation type as the metrics' type label says it.</summary>
    internal static string LabelOf(RecommendationType type) => Array.Find(TypeLabels, t => t.Type == type).Label;

    private static void RenderPlan(Exposition w, Plan plan)
    {
        w.Header(Families.Recommendations);
        foreach (var (type, label) in TypeLabels)
        {
            w.Begin(Families.Recommendations, "type", label); w.EndLabels(); w.Integer(plan.Recommendations.Count(r => r.Type == type));
        }
        w.Header(Families.RecommendationSavings);
        foreach (var (type, label) in TypeLabels)
        {
            var savings = plan.Recommendations.Where(r => r.Type == type).Sum(r => Math.Max(0, r.SavingsPerHour));
            w.Begin(Families.RecommendationSavings, "type", label); w.EndLabels(); w.Double((double)savings);
        }
        w.Header(Families.RecommendedNodes);
        foreach (var g in plan.Recommendations.Where(r => r.Type == RecommendationType.Provision).SelectMany(r => r.NewNodes)
                     .GroupBy(n => n.ServerClass).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            w.Begin(Families.RecommendedNodes, "server_class", g.Key); w.EndLabels(); w.Integer(g.Sum(n => n.Count));
        }
        w.Header(Families.ProvisioningCost); w.NameOnly(Families.ProvisioningCost); w.Double((double)plan.ProvisioningCostPerHour);
        w.Header(Families.ProvisioningLowerBound); w.NameOnly(Families.ProvisioningLowerBound); w.Double((double)plan.ProvisioningLowerBoundPerHour);
        if (plan.Costs is { } costs)
        {
            w.Header(Families.ClusterCostAfterRecommendations); w.NameOnly(Families.ClusterCostAfterRecommendations); w.Double(CostRules.Dollars(costs.AfterRecommendationsPerHour));
            w.Header(Families.ClusterCostLowerBound); w.NameOnly(Families.ClusterCostLowerBound); w.Double(CostRules.Dollars(costs.LowerBoundPerHour));
            w.Header(Families.ClusterCostLowerBoundExcludedPods); w.NameOnly(Families.ClusterCostLowerBoundExcludedPods); w.Integer(costs.LowerBoundExcludedPods);
        }
        w.Header(Families.NodeDisruptionBlocked);
        foreach (var (node, blockers) in plan.Blockers.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            foreach (var reason in blockers.Select(b => b.Reason).Distinct().Order(StringComparer.Ordinal))
            {
                w.Begin(Families.NodeDisruptionBlocked, "node", node); w.Label("reason", reason); w.EndLabels(); w.Integer(1);
            }
    }
}
