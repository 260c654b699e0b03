using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Karpetrack;

public enum RecommendationType { Provision, Replace, Consolidate, DeleteEmpty }

public sealed record RecommenderOptions
{
    /// <summary>Only classes of this Spot region are bought; null = the region most existing nodes are in.</summary>
    public string? Region { get; init; }
    /// <summary>Category codes allowed for new nodes (gp, ch, mh, gpu); empty = all but bare metal.</summary>
    public IReadOnlyList<string> Categories { get; init; } = [];
    public decimal? MaxPricePerHour { get; init; }
    public decimal ReplaceThresholdPercent { get; init; } = 20;
    public decimal ReplaceThresholdDollars { get; init; } = 0.005m;

    /// <summary>
    /// The replacement rule: a saving worth buying nodes for reaches both thresholds. Pure removals do not
    /// use it (any positive saving counts).
    /// </summary>
    public bool SavesEnoughToReplace(decimal currentPerHour, decimal savingPerHour) =>
        savingPerHour >= ReplaceThresholdDollars && savingPerHour >= currentPerHour * ReplaceThresholdPercent / 100;
    /// <summary>GPUs per GPU class (the feed does not say); classes not listed count as one GPU.</summary>
    public IReadOnlyDictionary<string, int> GpuPerClass { get; init; } = new Dictionary<string, int>();
    /// <summary>Kubelet and system reservation assumed for a class no existing node shows: 100m cpu and 5 % of memory.</summary>
    public long DefaultReservedMilliCpu { get; init; } = 100;
    public double DefaultReservedMemoryShare { get; init; } = 0.05;
    /// <summary>Nodes considered together for a multi-node consolidation (the least utilized first).</summary>
    public int MultiNodeCandidates { get; init; } = 10;
    public int MaxPodsPerNode { get; init; } = 110;
}

public sealed record NewNode(string ServerClass, int Count, decimal PricePerHour);

/// <summary>A node being provisioned (its pool exists, its node has not joined): capacity pending pods may count on.</summary>
public sealed record InFlightNode(string Pool, string ServerClass);

/// <summary>A pod to evict and where it goes: an existing node, or a new node "&lt;class&gt;#n" of the recommendation.</summary>
public sealed record PodMove(string Namespace, string Pod, string From, string To);

/// <summary>Why a node cannot be disrupted: a bounded reason code plus the pods and budgets involved.</summary>
public sealed record Blocker(string Reason, IReadOnlyList<string> Pods, IReadOnlyList<string> Pdbs);

public sealed record Recommendation(
    string Id,
    RecommendationType Type,
    IReadOnlyList<string> Nodes,          // exactly the nodes to remove or replace; empty for provisioning
    IReadOnlyList<NewNode> NewNodes,
    IReadOnlyList<PodMove> Moves,
    IReadOnlyList<string> PendingPods,     // provisioning: the pending pods served ("ns/name")
    decimal CurrentCostPerHour,
    decimal NewCostPerHour,
    decimal LowerBoundPerHour,
    int PodsEvicted,
    int PdbHeadroom,                       // the smallest disruptionsAllowed among budgets the moves touch (-1: none)
    IReadOnlyList<string> Reasons)
{
    public decimal SavingsPerHour => CurrentCostPerHour - NewCostPerHour;
    public decimal SavingsPerMonth => SavingsPerHour * 730;
}

/// <summary>Where each pod (by index) went: an existing node or "&lt;class&gt;#n"; the pods that fit nowhere and why.</summary>
public sealed record WhatIfPlacement(
    IReadOnlyDictionary<int, (string Node, bool New)> Placed,
    IReadOnlyList<(int Item, string Reason)> Unplaced,
    IReadOnlyList<NewNode> NewNodes,
    decimal NewCostPerHour,
    string Region);

public sealed record Plan(
    IReadOnlyList<Recommendation> Recommendations,
    IReadOnlyDictionary<string, IReadOnlyList<Blocker>> Blockers,
    IReadOnlyList<(string Pod, string Reason)> Unplaceable,
    decimal ProvisioningCostPerHour,
    decimal ProvisioningLowerBoundPerHour,
    string Region)
{
    public static readonly Plan Empty = new([], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "");
}

/// <summary>The reason codes of blockers, a bounded set (they become a metric label).</summary>
public static class BlockerReasons
{
    public const string NodeDoNotDisrupt = "node_do_not_disrupt";
    public const string NodeScaleDownDisabled = "node_scale_down_disabled";
    public const string NodeNotReady = "node_not_ready";
    public const string NodeDeleting = "node_deleting";
    public const string NodeUnpriced = "node_unpriced";
    public const string PodDoNotDisrupt = "pod_do_not_disrupt";
    public const string PodSafeToEvictFalse = "pod_safe_to_evict_false";
    public const string PodLocalStorage = "pod_local_storage";
    public const string PodNoController = "pod_no_controller";
    public const string PdbNoDisruptions = "pdb_no_disruptions_allowed";
    public const string KubeSystemWithoutPdb = "kube_system_pod_without_pdb";
    public const string PodsDoNotFit = "pods_do_not_fit_elsewhere";
    public const string NotCheaper = "no_cheaper_shape";
    public const string ReceivesPods = "receives_consolidated_pods";

    public static readonly string[] All =
    [
        NodeDoNotDisrupt, NodeScaleDownDisabled, NodeNotReady, NodeDeleting, NodeUnpriced, PodDoNotDisrupt, PodSafeToEvictFalse,
        PodLocalStorage, PodNoController, PdbNoDisruptions, KubeSystemWithoutPdb, PodsDoNotFit, NotCheaper, ReceivesPods,
    ];
}

/// <summary>
/// Pure and deterministic: a cluster snapshot, its pods, budgets, DaemonSets and a price book in,
/// a Plan out. Provisioning for pending pods, cheaper replacements, and consolidation (empty nodes,
/// underused nodes, several nodes into fewer), each with savings, disruption and reasons; every node
/// not recommended for removal carries its blockers. No I/O, no clock.
/// </summary>
public static class Recommender
{
    /// <summary>A server class one may buy, as a bin type plus the labels its nodes will carry.</summary>
    private sealed record Offer(BinType Bin, PricedClass Class, IReadOnlyDictionary<string, string> Labels, bool Gpu);

    public static Plan Recommend(ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o,
        IReadOnlyList<InFlightNode>? inFlight = null)
    {
        var region = o.Region ?? MostCommonRegion(snap.Nodes);
        var dsShapes = daemonSets.Select(d => (Shape: ShapeOf(d.Template), Requests: d.Template.Requests)).ToArray();
        var offers = Offers(snap, book, region, o, dsShapes);
        var byNode = ByNode(pods);
        // A run over a large cluster allocates hundreds of MB: collect its young garbage as it goes
        // rather than letting the runtime's gen0 budget (sized from the L3 cache) commit it all.
        var pacer = new AllocationPacer(16 << 20);
        var pdbIndex = pdbs.GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        var views = snap.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);

        var recommendations = new List<Recommendation>();
        var unplaceable = new List<(string, string)>();

        // Capacity left on nodes that may receive pods: ready, schedulable, not being deleted.
        var free = new Dictionary<string, Demand>(StringComparer.Ordinal);
        foreach (var n in snap.Nodes)
            if (IsDestination(n)) free[n.Name] = FreeOf(n, snap.Resources, o);
        // Nodes being provisioned take pending pods before anything new is bought, so the same
        // pending pods are never provisioned for twice; they receive nothing else (they are not up yet).
        var provisioning = InFlightBins(inFlight ?? [], offers, snap.Resources, free, views);
        // Hostname anti-affinity groups present on each node (pods that repel their own kind): no placement below
        // may add a pod of a group a node already holds. A pod repelling other kinds is not modelled here.
        var groups = AntiAffinityGroups(pods);

        // 1. Provisioning for pending pods: existing room first, then the cheapest set of new nodes.
        var pending = pods.Where(p => p.Pending).ToArray();
        decimal provisionCost = 0, provisionBound = 0;
        if (pending.Length > 0)
        {
            var (rec, lost, cost, bound) = Provision(pending, offers, snap, free, views, groups, o);
            if (rec is not null) recommendations.Add(rec);
            unplaceable.AddRange(lost);
            provisionCost = cost;
            provisionBound = bound;
        }
        foreach (var name in provisioning) { free.Remove(name); views.Remove(name); }

        // 2. Blockers for every node, then removals (empty, underused, multi-node) and replacements.
        var blockers = new Dictionary<string, List<Blocker>>(StringComparer.Ordinal);
        foreach (var n in snap.Nodes)
        {
            blockers[n.Name] = NodeBlockers(n, byNode.GetValueOrDefault(n.Name) ?? [], pdbIndex, book);
            pacer.Tick();
        }

        var removed = new HashSet<string>(StringComparer.Ordinal);
        var receivers = new HashSet<string>(StringComparer.Ordinal);   // nodes that take pods of a removed node stay
        var candidates = snap.Nodes
            .Where(n => blockers[n.Name].Count == 0)
            .Select(n => (Node: n, Movable: Movable(byNode.GetValueOrDefault(n.Name) ?? []), Price: PriceOf(n, book)!.Value))
            .OrderBy(c => c.Movable.Length == 0 ? 0 : 1)
            .ThenBy(c => Utilization(c.Node))
            .ThenByDescending(c => c.Price)
            .ThenBy(c => c.Node.Name, StringComparer.Ordinal)
            .ToList();

        var destinations = new Destinations(snap.Nodes.Where(IsDestination), free, groups, snap.Resources);
        foreach (var (node, movable, price) in candidates)
        {
            pacer.Tick();
            if (receivers.Contains(node.Name)) continue;
            var placement = destinations.TryPlace(movable, node.Name);
            if (placement.Unfit is { } unfit)
            {
                blockers[node.Name].Add(new Blocker(BlockerReasons.PodsDoNotFit, unfit, []));
                continue;
            }
            destinations.Commit(placement);
            foreach (var (dest, _) in placement.Used) receivers.Add(dest);
            removed.Add(node.Name);
            destinations.Remove(node.Name);
            var type = movable.Length == 0 ? RecommendationType.DeleteEmpty : RecommendationType.Consolidate;
            var reasons = new List<string>
            {
                movable.Length == 0
                    ? $"{node.Name} runs no pods but DaemonSet and mirror pods; it costs {price:0.###} $/h"
                    : $"the {movable.Length} pods of {node.Name} fit on the remaining nodes; removing it saves {price:0.###} $/h",
            };
            recommendations.Add(Build(type, [node.Name], [], placement.Moves, [], price, 0, 0, movable, pdbIndex, reasons));
        }

        // Multi-node: the least utilized remaining nodes together, onto the rest plus new nodes if cheaper.
        var multi = MultiNode(snap, candidates.Where(c => !removed.Contains(c.Node.Name) && !receivers.Contains(c.Node.Name)).ToList(), offers, free, removed, views, groups, pdbIndex, o);
        if (multi is not null)
        {
            recommendations.Add(multi);
            foreach (var n in multi.Nodes) removed.Add(n);
            // Nodes taking those pods now hold more than their own: they are not replaced on their old pod set.
            foreach (var m in multi.Moves) if (views.ContainsKey(m.To)) receivers.Add(m.To);
        }

        // Replacement: a node whose pods fit on a cheaper set of new nodes, above the threshold.
        foreach (var (node, movable, price) in candidates)
        {
            pacer.Tick();
            if (removed.Contains(node.Name)) continue;
            if (receivers.Contains(node.Name))
            {
                blockers[node.Name].Add(new Blocker(BlockerReasons.ReceivesPods, [], []));
                continue;
            }
            var replacement = Replace(node, movable, price, offers, pdbIndex, o, snap.Resources);
            if (replacement is null)
            {
                if (!blockers[node.Name].Any(b => b.Reason == BlockerReasons.PodsDoNotFit))
                    blockers[node.Name].Add(new Blocker(BlockerReasons.NotCheaper, [], []));
                continue;
            }
            recommendations.Add(replacement);
            blockers[node.Name].RemoveAll(b => b.Reason == BlockerReasons.PodsDoNotFit);
        }
        foreach (var n in removed) blockers[n].Clear();

        var ordered = recommendations
            .OrderBy(r => r.Type)
            .ThenByDescending(r => r.SavingsPerHour)
            .ThenBy(r => r.Id, StringComparer.Ordinal)
            .ToList();
        var finalBlockers = blockers.Where(kv => !removed.Contains(kv.Key) && !ordered.Any(r => r.Nodes.Contains(kv.Key)))
            .ToDictionary(kv => kv.Key, kv => (IReadOnlyList<Blocker>)kv.Value, StringComparer.Ordinal);
        return new Plan(ordered, finalBlockers, unplaceable, provisionCost, provisionBound, region);
    }

    // ---- offers ------------------------------------------------------------------------------

    /// <summary>The prefix naming a node that is still being provisioned, in placements and reasons.</summary>
    public const string ProvisioningPrefix = "provisioning:";

    private static List<string> InFlightBins(IReadOnlyList<InFlightNode> inFlight, List<Offer> offers, ResourceTable resources,
        Dictionary<string, Demand> free, Dictionary<string, NodeView> views)
    {
        var names = new List<string>();
        foreach (var f in inFlight)
        {
            // A class no longer offered (price cap, category) still gets its node; it just is not counted on here.
            var offer = offers.FirstOrDefault(x => x.Bin.Name == f.ServerClass);
            if (offer is null) continue;
            var name = ProvisioningPrefix + f.Pool;
            var zeros = new long[resources.Count];
            views[name] = new NodeView
            {
                Name = name,
                Labels = new Dictionary<string, string>(offer.Labels, StringComparer.Ordinal) { [SpotLabels.Pool] = f.Pool },
                Annotations = new Dictionary<string, string>(),
                Allocatable = zeros, Capacity = zeros, Allocated = zeros, DaemonSetOverhead = zeros,
                Pods = 0, Ready = false, Schedulable = true, Deleting = false, Taints = [],
                NamespaceRequests = new Dictionary<string, long[]>(),
            };
            free[name] = offer.Bin.Capacity;
            names.Add(name);
        }
        return names;
    }

    private static string MostCommonRegion(NodeView[] nodes) =>
        nodes.Select(n => SpotLabels.RegionOfClass(n.ServerClass)).Where(r => r is not null)
            .GroupBy(r => r!).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).Select(g => g.Key).FirstOrDefault() ?? "";

    /// <summary>The labels a node of this class will carry when Karpetrack provisions it.</summary>
    public static Dictionary<string, string> NewNodeLabels(ServerClass c) => new(StringComparer.Ordinal)
    {
        [SpotLabels.ServerClass] = c.Name,
        [SpotLabels.CapacityType] = "spot",
        [SpotLabels.TopologyRegion] = SpotLabels.RegionSuffix(c.Region).ToUpperInvariant(),
        ["karpetrack.io/managed"] = "true",
        ["karpetrack.io/category"] = c.Category,
        ["kubernetes.io/os"] = "linux",
        ["kubernetes.io/arch"] = "amd64",
    };

    private static List<Offer> Offers(ClusterSnapshot snap, PriceBook book, string region, RecommenderOptions o, (PodShape Shape, long[] Requests)[] daemonSets)
    {
        var offers = new List<Offer>();
        int id = 0;
        foreach (var (name, pc) in book.Classes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var c = pc.Class;
            if (region.Length > 0 && c.Region != region) continue;
            // Spot accepts bids only on classes with a minimum bid. The public feed carries none: once the Spot API has
            // given them, a class without one is never bought; from the feed alone, bare metal (which has none) is left out.
            if (c.Category == "bm" || (book.KnowsMinBids && pc.Prices.MinBid is null)) continue;
            if (pc.Prices.Availability is { } a && a != "available") continue;
            if (o.Categories.Count > 0 && !o.Categories.Contains(c.Category)) continue;
            var price = pc.Prices.SpotPrice;
            if (o.MaxPricePerHour is { } max && price > max) continue;
            bool gpu = c.Category == "gpu";
            var labels = NewNodeLabels(c);
            var (reservedCpu, reservedMem) = Reserved(snap, c, o);
            long cpu = (long)(c.Cpu * 1000) - reservedCpu, mem = c.MemoryBytes - reservedMem;
            long dsCpu = 0, dsMem = 0, dsPods = 0;
            foreach (var (shape, req) in daemonSets)
            {
                if (!shape.AllowsNode(labels, [])) continue;
                dsCpu += req[ResourceTable.Cpu];
                dsMem += req[ResourceTable.Memory];
                dsPods++;
            }
            var capacity = new Demand(cpu - dsCpu, mem - dsMem, GpusOf(c, o), o.MaxPodsPerNode - dsPods);
            if (!capacity.IsNonNegative) continue;
            offers.Add(new Offer(new BinType(id++, name, capacity, price), pc, labels, gpu));
        }
        return offers;
    }

    /// <summary>GPUs a node of the class has: the feed does not say, so --gpus-per-class, else one per GPU class.</summary>
    private static int GpusOf(ServerClass c, RecommenderOptions o) => c.Category == "gpu" ? o.GpuPerClass.GetValueOrDefault(c.Name, 1) : 0;

    /// <summary>Capacity minus allocatable as existing nodes of the class show it, else the documented default.</summary>
    private static (long Cpu, long Memory) Reserved(ClusterSnapshot snap, ServerClass c, RecommenderOptions o)
    {
        foreach (var n in snap.Nodes)
        {
            if (n.ServerClass != c.Name || n.Capacity[ResourceTable.Cpu] <= 0) continue;
            return (Math.Max(0, n.Capacity[ResourceTable.Cpu] - n.Allocatable[ResourceTable.Cpu]),
                    Math.Max(0, n.Capacity[ResourceTable.Memory] - n.Allocatable[ResourceTable.Memory]));
        }
        return (o.DefaultReservedMilliCpu, (long)(c.MemoryBytes * o.DefaultReservedMemoryShare));
    }

    // ---- pods --------------------------------------------------------------------------------

    private static PodShape ShapeOf(PodRecord template) =>
        PodShape.Parse(template.Namespace, template.Owner, template.OwnerName, template.Name, template.Traits, template.Priority,
            template.LabelsJson, template.NodeSelectorJson, template.AffinityJson, template.TolerationsJson);

    /// <summary>
    /// The packer's GPU dimension: nvidia.com/gpu, which the model always tracks (Spot's GPU classes are NVIDIA),
    /// plus amd.com/gpu when --resources lists it.
    /// </summary>
    private static long Gpus(long[] amounts, ResourceTable t)
    {
        long gpu = t.GpuIndex < amounts.Length ? amounts[t.GpuIndex] : 0;
        if (t.AmdGpuIndex >= 0 && t.AmdGpuIndex < amounts.Length) gpu += amounts[t.AmdGpuIndex];
        return gpu;
    }

    private static Demand DemandOf(PodFacts p, ResourceTable t) =>
        new(p.Requests[ResourceTable.Cpu], p.Requests[ResourceTable.Memory], Gpus(p.Requests, t), 1);

    /// <summary>The pods bound to each node, in their order in <paramref name="pods"/> (two passes over the pods, no grouping objects).</summary>
    private static Dictionary<string, PodFacts[]> ByNode(PodFacts[] pods)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in pods)
            if (p.Node is not null) CollectionsMarshal.GetValueRefOrAddDefault(counts, p.Node, out _)++;
        var byNode = new Dictionary<string, PodFacts[]>(counts.Count, StringComparer.Ordinal);
        foreach (var (node, count) in counts) byNode[node] = new PodFacts[count];
        foreach (var key in counts.Keys) counts[key] = 0;
        foreach (var p in pods)
            if (p.Node is not null) byNode[p.Node][CollectionsMarshal.GetValueRefOrNullRef(counts, p.Node)++] = p;
        return byNode;
    }

    private static PodFacts[] Movable(PodFacts[] onNode) => onNode.Where(p => !p.IsOverhead).ToArray();

    private static bool IsDestination(NodeView n) => n.Ready && n.Schedulable && !n.Deleting;

    private static Demand FreeOf(NodeView n, ResourceTable t, RecommenderOptions o)
    {
        long podsAllocatable = o.MaxPodsPerNode;
        return new Demand(n.Allocatable[ResourceTable.Cpu] - n.Allocated[ResourceTable.Cpu], n.Allocatable[ResourceTable.Memory] - n.Allocated[ResourceTable.Memory],
            Gpus(n.Allocatable, t) - Gpus(n.Allocated, t), podsAllocatable - n.Pods);
    }

    private static double Utilization(NodeView n) => Math.Max(n.Utilization(ResourceTable.Cpu), n.Utilization(ResourceTable.Memory));

    private static decimal? PriceOf(NodeView n, PriceBook book) => book.NodePrice(n.ServerClass, n.CapacityType);

    /// <summary>
    /// Constraint classes: one per distinct (pod shape, wants a GPU), so the packer asks each
    /// placement question once per class, and GPU classes are offered only to pods that request GPUs.
    /// </summary>
    private sealed class ShapeIndex(ResourceTable table)
    {
        private readonly Dictionary<(PodShape, bool), int> ids = [];
        private readonly Dictionary<string, int> groups = new(StringComparer.Ordinal);
        public readonly List<(PodShape Shape, bool Gpu)> Classes = [];

        public PackItem Item(int id, PodFacts p)
        {
            var demand = DemandOf(p, table);
            var key = (p.Shape, demand.Gpu > 0);
            if (!ids.TryGetValue(key, out var c)) { ids[key] = c = Classes.Count; Classes.Add(key); }
            return new PackItem(id, demand, c, AntiAffinityGroup(p.Shape));
        }

        /// <summary>Pods that repel their own kind share a group, keyed by the term (see PodShape.SelfAntiAffinityKey).</summary>
        private int AntiAffinityGroup(PodShape s)
        {
            if (s.SelfAntiAffinityKey is not { } key) return -1;
            if (!groups.TryGetValue(key, out var g)) groups[key] = g = groups.Count;
            return g;
        }

        public bool AllowsOffer(int c, Offer offer) => (!offer.Gpu || Classes[c].Gpu) && Classes[c].Shape.AllowsNode(offer.Labels, []);

        /// <summary>The node's labels and taints allow the class, and it holds no pod of the class's anti-affinity group.</summary>
        public bool AllowsNode(int c, NodeView n, HashSet<string>? groupsOnNode) =>
            !(groupsOnNode is not null && Classes[c].Shape.SelfAntiAffinityKey is { } key && groupsOnNode.Contains(key))
            && Classes[c].Shape.AllowsNode(n.Labels, n.Taints);
    }

    /// <summary>Pods onto existing free capacity and the offered classes, each placement checked against the pod's constraints.</summary>
    /// <remarks>
    /// The packer keeps anti-affine items apart only among the items it places; what already runs on an existing
    /// node is answered here (<paramref name="groups"/>), once per constraint class and node, as labels and taints are.
    /// </remarks>
    private static PackingProblem Problem(ShapeIndex shapes, IReadOnlyList<PackItem> items, List<Offer> offers, IReadOnlyList<ExistingBin> existing,
        Dictionary<string, NodeView> views, Dictionary<string, HashSet<string>>? groups) => new()
    {
        Items = items,
        Types = offers.Select(x => x.Bin).ToList(),
        Existing = existing,
        TypeAllows = (c, t) => shapes.AllowsOffer(c, offers[t.Id]),
        BinAllows = (c, b) => shapes.AllowsNode(c, views[b.Name], groups?.GetValueOrDefault(b.Name)),
    };

    /// <summary>The anti-affinity groups (PodShape.SelfAntiAffinityKey) of the pods bound to each node; most nodes have none.</summary>
    private static Dictionary<string, HashSet<string>> AntiAffinityGroups(PodFacts[] pods)
    {
        var groups = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var p in pods)
            if (p.Node is not null && p.Shape.SelfAntiAffinityKey is { } key) AddGroup(groups, p.Node, key);
        return groups;
    }

    /// <summary>What a solution puts on existing nodes takes their room and brings its anti-affinity groups.</summary>
    private static void TakeRoom(PackingSolution solution, IReadOnlyList<ExistingBin> existing, IReadOnlyList<PackItem> items, PodFacts[] pods,
        Dictionary<string, Demand> free, Dictionary<string, HashSet<string>> groups)
    {
        foreach (var (item, bin) in solution.OnExisting)
        {
            free[existing[bin].Name] = free[existing[bin].Name] - items[item].Demand;
            if (pods[item].Shape.SelfAntiAffinityKey is { } key) AddGroup(groups, existing[bin].Name, key);
        }
    }

    private static void AddGroup(Dictionary<string, HashSet<string>> groups, string node, string key)
    {
        if (!groups.TryGetValue(node, out var set)) groups[node] = set = new HashSet<string>(StringComparer.Ordinal);
        set.Add(key);
    }

    private static (Recommendation? Rec, List<(string, string)> Lost, decimal Cost, decimal Bound) Provision(
        PodFacts[] pending, List<Offer> offers, ClusterSnapshot snap, Dictionary<string, Demand> free, Dictionary<string, NodeView> views,
        Dictionary<string, HashSet<string>> groups, RecommenderOptions o)
    {
        var shapes = new ShapeIndex(snap.Resources);
        var items = pending.Select((p, i) => shapes.Item(i, p)).ToList();
        var existing = free.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select((kv, i) => new ExistingBin(i, kv.Key, kv.Value)).ToList();
        var solution = Packer.Solve(Problem(shapes, items, offers, existing, views, groups));
        var lost = solution.Unplaced.Select(u => (Describe(pending[u.Item]), u.Reason)).ToList();
        // Room (and anti-affinity groups) that pods take on existing nodes are no longer free for consolidation.
        TakeRoom(solution, existing, items, pending, free, groups);
        if (solution.NewBins.Count == 0) return (null, lost, 0, solution.LowerBound);

        var newNodes = solution.NewBins.GroupBy(b => b.Type.Name)
            .Select(g => new NewNode(g.Key, g.Count(), g.First().Type.PricePerHour))
            .OrderBy(n => n.ServerClass, StringComparer.Ordinal).ToList();
        // Each pod's name is built once, and each sort done once: a plan for 100k pending pods is mostly names and sorts.
        var moves = new List<PodMove>(pending.Length);
        var counter = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var bin in solution.NewBins)
        {
            int n = counter[bin.Type.Name] = counter.GetValueOrDefault(bin.Type.Name) + 1;
            var to = $"{bin.Type.Name}#{n}";
            foreach (var i in bin.Items) moves.Add(new PodMove(pending[i].Namespace, pending[i].Name, "", to));
        }
        var served = new string[moves.Count];
        for (int k = 0; k < moves.Count; k++) served[k] = moves[k].Namespace + "/" + moves[k].Pod;
        Array.Sort(served, StringComparer.Ordinal);
        var gap = solution.LowerBound > 0 ? (solution.Cost - solution.LowerBound) / solution.LowerBound * 100 : 0;
        var reasons = new List<string>
        {
            $"{served.Length} pending pods fit on no existing node; the cheapest new capacity is {string.Join(", ", newNodes.Select(n => $"{n.Count}× {n.ServerClass}"))} for {solution.Cost:0.###} $/h",
            $"lower bound {solution.LowerBound:0.###} $/h ({gap:0.#} % gap, {solution.Strategy})",
        };
        int onProvisioning = solution.OnExisting.Count(x => existing[x.Value].Name.StartsWith(ProvisioningPrefix, StringComparison.Ordinal));
        if (solution.OnExisting.Count > onProvisioning) reasons.Add($"{solution.OnExisting.Count - onProvisioning} other pending pods fit on existing free capacity");
        if (onProvisioning > 0) reasons.Add($"{onProvisioning} other pending pods fit on nodes already being provisioned");
        if (lost.Count > 0) reasons.Add($"{lost.Count} pending pods fit no allowed class");
        var rec = Build(RecommendationType.Provision, [], newNodes, moves, served, 0, solution.Cost, solution.LowerBound, [], new Dictionary<string, PdbRecord[]>(), reasons);
        return (rec, lost, solution.Cost, solution.LowerBound);
    }

    private static string Describe(PodFacts p) => $"{p.Namespace}/{p.Name}";

    // ---- removal and replacement ---------------------------------------------------------------

    /// <summary>Where a node's pods would go; <see cref="Unfit"/> names those that fit nowhere (then the rest is not a plan).</summary>
    private readonly record struct Placement(List<PodMove> Moves, List<(string Node, Demand Demand)> Used, List<(string Node, string Group)>? Groups = null,
        List<string>? Unfit = null);

    /// <summary>Per-node replacement checks are many and small: a bounded exact polish is enough there.</summary>
    private static readonly PackingOptions PerNode = new() { ExactItems = 12, ExactNodes = 20_000, PortfolioItems = 0 };

    /// <summary>
    /// Free capacity on the nodes that may receive pods, for one removal after another: a removal's
    /// pods are placed tentatively (largest first, onto the fullest node that takes them), and only
    /// a removal that places every pod is committed, so no two removals count on the same room.
    /// Work per removal is the displaced pods times the nodes scanned, never a whole re-pack.
    /// </summary>
    private sealed class Destinations
    {
        private readonly NodeView[] order;                          // fullest first: tight placements, emptier nodes stay removable
        private readonly Dictionary<string, int> index = new(StringComparer.Ordinal);
        private readonly Demand[] free;                             // by position in order; the hot loop avoids string hashing
        private readonly bool[] gone;
        private readonly bool[] plain;                              // no NoSchedule/NoExecute taint: most pods need no label check
        private readonly HashSet<string>?[] groups;                 // anti-affinity groups present per node (the shared sets)
        private readonly Dictionary<string, Demand> shared;
        private readonly Dictionary<string, HashSet<string>> sharedGroups;
        private readonly ResourceTable table;
        private readonly Demand[] delta;
        private readonly List<int> touched = [];

        public Destinations(IEnumerable<NodeView> nodes, Dictionary<string, Demand> free, Dictionary<string, HashSet<string>> groupsByNode, ResourceTable table)
        {
            shared = free;
            sharedGroups = groupsByNode;
            this.table = table;
            order = nodes.OrderByDescending(Utilization).ThenBy(n => n.Name, StringComparer.Ordinal).ToArray();
            this.free = new Demand[order.Length];
            delta = new Demand[order.Length];
            gone = new bool[order.Length];
            plain = new bool[order.Length];
            groups = new HashSet<string>?[order.Length];
            for (int i = 0; i < order.Length; i++)
            {
                var n = order[i];
                index[n.Name] = i;
                this.free[i] = free[n.Name];
                plain[i] = !n.Taints.Any(t => t.Effect is "NoSchedule" or "NoExecute");
                groups[i] = groupsByNode.GetValueOrDefault(n.Name);
            }
        }

        public void Remove(string node)
        {
            if (index.TryGetValue(node, out var i)) gone[i] = true;
        }

        /// <summary>
        /// Places the pods tentatively; the ones that fit nowhere are named in Unfit (up to <see cref="MaxNamedUnfit"/>,
        /// the others still placed until then). A pod of a shape that already failed with no larger a demand fails
        /// without a scan (room only shrinks as pods are placed): replicas of one workload cost one scan.
        /// </summary>
        public Placement TryPlace(PodFacts[] pods, string from)
        {
            if (pods.Length == 0) return new Placement([], []);
            int self = index.TryGetValue(from, out var own) ? own : -1;
            foreach (var i in touched) delta[i] = Demand.Zero;
            touched.Clear();
            var addedGroups = new List<(string Node, string Group)>();
            var moves = new List<PodMove>();
            var used = new List<(string, Demand)>();
            List<string>? unfit = null;
            List<(PodShape Shape, Demand Demand)>? failed = null;
            foreach (var p in pods.OrderByDescending(p => p.Requests[ResourceTable.Cpu]).ThenByDescending(p => p.Requests[ResourceTable.Memory]).ThenBy(p => p.Uid))
            {
                var demand = DemandOf(p, table);
                if (failed is not null && FailedBefore(failed, p.Shape, demand))
                {
                    (unfit ??= []).Add(Describe(p));
                    if (unfit.Count >= MaxNamedUnfit) break;
                    continue;
                }
                var group = p.Shape.SelfAntiAffinityKey;
                bool unconstrained = p.Shape.NodeSelector.Count == 0 && p.Shape.RequiredNodeTerms.Count == 0;
                int target = -1;
                for (int i = 0; i < order.Length; i++)
                {
                    if (i == self || gone[i]) continue;
                    if (!demand.FitsIn(free[i] - delta[i])) continue;
                    if (group is not null && ((groups[i]?.Contains(group) ?? false) || addedGroups.Contains((order[i].Name, group)))) continue;
                    if (!(unconstrained && plain[i]) && !p.Shape.AllowsNode(order[i].Labels, order[i].Taints)) continue;
                    target = i;
                    break;
                }
                if (target < 0)
                {
                    (unfit ??= []).Add(Describe(p));
                    (failed ??= []).Add((p.Shape, demand));
                    if (unfit.Count >= MaxNamedUnfit) break;
                    continue;
                }
                if (delta[target] == Demand.Zero) touched.Add(target);
                delta[target] = delta[target] + demand;
                if (group is not null) addedGroups.Add((order[target].Name, group));
                moves.Add(new PodMove(p.Namespace, p.Name, from, order[target].Name));
                used.Add((order[target].Name, demand));
            }
            unfit?.Sort(StringComparer.Ordinal);
            return new Placement(moves, used, addedGroups, unfit);
        }

        /// <summary>
        /// A blocker names at most this many pods that fit nowhere: past it the node is known to stay, and
        /// placing its other pods only to name more cost the 5,000-node scan about a fifth more.
        /// </summary>
        private const int MaxNamedUnfit = 10;

        private static bool FailedBefore(List<(PodShape Shape, Demand Demand)> failed, PodShape shape, Demand demand)
        {
            foreach (var f in failed)
                if (ReferenceEquals(f.Shape, shape) && f.Demand.FitsIn(demand)) return true;
            return false;
        }

        public void Commit(Placement placement)
        {
            foreach (var (node, demand) in placement.Used)
            {
                int i = index[node];
                free[i] = free[i] - demand;
                shared[node] = free[i];
            }
            foreach (var (node, group) in placement.Groups ?? [])
            {
                AddGroup(sharedGroups, node, group);
                groups[index[node]] = sharedGroups[node];
            }
        }

    }

    private static Recommendation? Replace(NodeView node, PodFacts[] movable, decimal price, List<Offer> offers,
        Dictionary<string, PdbRecord[]> pdbIndex, RecommenderOptions o, ResourceTable table)
    {
        if (movable.Length == 0) return null;
        var shapes = new ShapeIndex(table);
        var items = movable.Select((p, i) => shapes.Item(i, p)).ToList();
        var problem = new PackingProblem
        {
            Items = items,
            Types = offers.Select(x => x.Bin).ToList(),
            TypeAllows = (c, t) => shapes.AllowsOffer(c, offers[t.Id]),
            BinAllows = (_, _) => false,
        };
        // No packing can beat the lower bound: skip the search when even the bound saves too little.
        var floor = Packer.LowerBound(problem);
        if (!o.SavesEnoughToReplace(price, price - floor)) return null;
        var solution = Packer.Solve(problem, PerNode);
        if (solution.Unplaced.Count > 0) return null;
        var savings = price - solution.Cost;
        if (!o.SavesEnoughToReplace(price, savings)) return null;
        var newNodes = solution.NewBins.GroupBy(b => b.Type.Name).Select(g => new NewNode(g.Key, g.Count(), g.First().Type.PricePerHour))
            .OrderBy(n => n.ServerClass, StringComparer.Ordinal).ToList();
        var moves = new List<PodMove>();
        var counter = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var bin in solution.NewBins)
        {
            int n = counter[bin.Type.Name] = counter.GetValueOrDefault(bin.Type.Name) + 1;
            foreach (var i in bin.Items) moves.Add(new PodMove(movable[i].Namespace, movable[i].Name, node.Name, $"{bin.Type.Name}#{n}"));
        }
        var reasons = new List<string>
        {
            $"{node.Name} ({node.ServerClass}) costs {price:0.###} $/h; its {movable.Length} pods fit on {string.Join(", ", newNodes.Select(n => $"{n.Count}× {n.ServerClass}"))} for {solution.Cost:0.###} $/h",
            $"saves {savings / price * 100:0.#} % (threshold {o.ReplaceThresholdPercent} % and {o.ReplaceThresholdDollars} $/h)",
        };
        return Build(RecommendationType.Replace, [node.Name], newNodes, moves, [], price, solution.Cost, solution.LowerBound, movable, pdbIndex, reasons);
    }

    private static Recommendation? MultiNode(ClusterSnapshot snap, List<(NodeView Node, PodFacts[] Movable, decimal Price)> remaining,
        List<Offer> offers, Dictionary<string, Demand> free, HashSet<string> removed, Dictionary<string, NodeView> views,
        Dictionary<string, HashSet<string>> groups, Dictionary<string, PdbRecord[]> pdbIndex, RecommenderOptions o)
    {
        var group = remaining.Where(c => c.Movable.Length > 0).OrderBy(c => Utilization(c.Node)).ThenBy(c => c.Node.Name, StringComparer.Ordinal)
            .Take(o.MultiNodeCandidates).ToList();
        if (group.Count < 2) return null;
        var names = group.Select(g => g.Node.Name).ToHashSet(StringComparer.Ordinal);
        var pods = group.SelectMany(g => g.Movable).ToArray();
        var shapes = new ShapeIndex(snap.Resources);
        var items = pods.Select((p, i) => shapes.Item(i, p)).ToList();
        var existing = free.Where(kv => !names.Contains(kv.Key) && !removed.Contains(kv.Key)).OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select((kv, i) => new ExistingBin(i, kv.Key, kv.Value)).ToList();
        var solution = Packer.Solve(Problem(shapes, items, offers, existing, views, groups));
        if (solution.Unplaced.Count > 0) return null;
        var current = group.Sum(g => g.Price);
        var savings = current - solution.Cost;
        // Only the nodes that actually lose their pods count; a plan that keeps all of them is no consolidation.
        if (savings <= 0 || solution.NewBins.Count >= group.Count) return null;
        // Buying nodes makes it a replacement, held to the replacement thresholds; a pure removal needs only a positive saving.
        if (solution.NewBins.Count > 0 && !o.SavesEnoughToReplace(current, savings)) return null;
        var newNodes = solution.NewBins.GroupBy(b => b.Type.Name).Select(g => new NewNode(g.Key, g.Count(), g.First().Type.PricePerHour))
            .OrderBy(n => n.ServerClass, StringComparer.Ordinal).ToList();
        var moves = new List<PodMove>();
        foreach (var (item, bin) in solution.OnExisting.OrderBy(kv => kv.Key))
            moves.Add(new PodMove(pods[item].Namespace, pods[item].Name, pods[item].Node!, existing[bin].Name));
        var counter = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var bin in solution.NewBins)
        {
            int n = counter[bin.Type.Name] = counter.GetValueOrDefault(bin.Type.Name) + 1;
            foreach (var i in bin.Items) moves.Add(new PodMove(pods[i].Namespace, pods[i].Name, pods[i].Node!, $"{bin.Type.Name}#{n}"));
        }
        TakeRoom(solution, existing, items, pods, free, groups);
        var reasons = new List<string>
        {
            $"{group.Count} underused nodes ({current:0.###} $/h) fit onto the remaining nodes" + (newNodes.Count > 0 ? $" plus {string.Join(", ", newNodes.Select(n => $"{n.Count}× {n.ServerClass}"))}" : "") + $" for {solution.Cost:0.###} $/h",
        };
        return Build(RecommendationType.Consolidate, group.Select(g => g.Node.Name).Order(StringComparer.Ordinal).ToList(), newNodes, moves, [],
            current, solution.Cost, solution.LowerBound, pods, pdbIndex, reasons);
    }

    // ---- blockers ------------------------------------------------------------------------------

    internal static List<Blocker> NodeBlockers(NodeView n, PodFacts[] onNode, Dictionary<string, PdbRecord[]> pdbIndex, PriceBook book)
    {
        var list = new List<Blocker>();
        if (n.Annotations.TryGetValue(NodeAnnotations.DoNotDisrupt, out var dnd) && dnd == "true") list.Add(new Blocker(BlockerReasons.NodeDoNotDisrupt, [], []));
        if (n.Annotations.TryGetValue(NodeAnnotations.ScaleDownDisabled, out var sdd) && sdd == "true") list.Add(new Blocker(BlockerReasons.NodeScaleDownDisabled, [], []));
        if (n.Deleting) list.Add(new Blocker(BlockerReasons.NodeDeleting, [], []));
        else if (!n.Ready) list.Add(new Blocker(BlockerReasons.NodeNotReady, [], []));
        if (PriceOf(n, book) is null) list.Add(new Blocker(BlockerReasons.NodeUnpriced, [], []));

        SortedDictionary<string, (List<string> Pods, SortedSet<string> Pdbs)>? byReason = null;   // most nodes have none
        void Add(string reason, PodFacts p, string? pdb = null)
        {
            byReason ??= new SortedDictionary<string, (List<string> Pods, SortedSet<string> Pdbs)>(StringComparer.Ordinal);
            if (!byReason.TryGetValue(reason, out var e)) byReason[reason] = e = ([], new SortedSet<string>(StringComparer.Ordinal));
            e.Pods.Add(Describe(p));
            if (pdb is not null) e.Pdbs.Add(pdb);
        }
        foreach (var p in onNode)
        {
            if (p.IsOverhead || p.Terminating) continue;   // DaemonSet and mirror pods never block; terminating pods are leaving anyway
            var s = p.Shape;
            if ((s.Traits & PodTraits.DoNotDisrupt) != 0) Add(BlockerReasons.PodDoNotDisrupt, p);
            if ((s.Traits & PodTraits.SafeToEvictFalse) != 0) Add(BlockerReasons.PodSafeToEvictFalse, p);
            // safe-to-evict "true" vouches that the pod's local data may be lost; it does not make a bare pod come back.
            if ((s.Traits & PodTraits.LocalStorage) != 0 && (s.Traits & PodTraits.SafeToEvictTrue) == 0) Add(BlockerReasons.PodLocalStorage, p);
            if (s.Owner == OwnerKind.None) Add(BlockerReasons.PodNoController, p);
            int budgets = 0;
            foreach (var b in pdbIndex.GetValueOrDefault(s.Namespace) ?? [])
            {
                if (!b.Selector.Matches(s.Labels)) continue;
                budgets++;
                if (b.DisruptionsAllowed <= 0) Add(BlockerReasons.PdbNoDisruptions, p, $"{b.Namespace}/{b.Name}");
            }
            if (s.Namespace == "kube-system" && budgets == 0) Add(BlockerReasons.KubeSystemWithoutPdb, p);
        }
        if (byReason is not null)
            foreach (var (reason, (podsList, pdbsSet)) in byReason) list.Add(new Blocker(reason, podsList.Order(StringComparer.Ordinal).ToList(), pdbsSet.ToList()));
        return list;
    }

    // ---- building recommendations --------------------------------------------------------------

    private static Recommendation Build(RecommendationType type, IReadOnlyList<string> nodes, IReadOnlyList<NewNode> newNodes, List<PodMove> moves,
        IReadOnlyList<string> pendingPods, decimal current, decimal next, decimal bound, PodFacts[] evicted,
        Dictionary<string, PdbRecord[]> pdbIndex, List<string> reasons)
    {
        int headroom = -1;
        foreach (var p in evicted)
            foreach (var b in (pdbIndex.GetValueOrDefault(p.Namespace) ?? []).Where(b => b.Selector.Matches(p.Shape.Labels)))
                headroom = headroom < 0 ? b.DisruptionsAllowed : Math.Min(headroom, b.DisruptionsAllowed);
        // Sorted once, here; the id hashes the same order.
        moves.Sort(static (a, b) => string.CompareOrdinal(a.Namespace, b.Namespace) is var c and not 0 ? c : string.CompareOrdinal(a.Pod, b.Pod));
        var id = StableId(type, nodes, newNodes, pendingPods, moves);
        return new Recommendation(id, type, nodes, newNodes, moves, pendingPods, current, next, bound, evicted.Length, headroom, reasons);
    }

    /// <summary>Same content, same id: type, nodes, new classes and the pods involved (moves in Build's order), hashed.</summary>
    private static string StableId(RecommendationType type, IReadOnlyList<string> nodes, IReadOnlyList<NewNode> newNodes, IReadOnlyList<string> pending, List<PodMove> moves)
    {
        // Streamed into the hash through one small buffer: the text of a plan for 100k pending pods was about 30 MB
        // of string, copy and bytes. The bytes hashed are those of the text, so ids do not change.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new IdText(hash);
        buffer.Add(type.ToString()).Add('|');
        for (int i = 0; i < nodes.Count; i++) { if (i > 0) buffer.Add(','); buffer.Add(nodes[i]); }
        buffer.Add('|');
        foreach (var n in newNodes) buffer.Add(n.ServerClass).Add('×').Add(n.Count.ToString(System.Globalization.CultureInfo.InvariantCulture)).Add(',');
        buffer.Add('|');
        for (int i = 0; i < pending.Count; i++) { if (i > 0) buffer.Add(','); buffer.Add(pending[i]); }
        buffer.Add('|');
        foreach (var m in moves) buffer.Add(m.Namespace).Add('/').Add(m.Pod).Add(',');
        buffer.Flush();
        Span<byte> digest = stackalloc byte[32];
        hash.GetHashAndReset(digest);
        return type.ToString().ToLowerInvariant()[..3] + "-" + Convert.ToHexStringLower(digest)[..12];
    }

    /// <summary>UTF-8 text into a hash in chunks.</summary>
    private sealed class IdText(IncrementalHash hash)
    {
        private readonly byte[] bytes = new byte[16 * 1024];
        private int used;

        public IdText Add(char c) => Add(new ReadOnlySpan<char>(in c));

        public IdText Add(ReadOnlySpan<char> text)
        {
            while (text.Length > 0)
            {
                // At most 3 bytes per UTF-16 unit; a surrogate pair is never split (chunks end on whole strings or 1k units).
                int take = Math.Min(text.Length, 1024);
                if (take < text.Length && char.IsHighSurrogate(text[take - 1])) take--;
                if (bytes.Length - used < take * 3) Flush();
                used += Encoding.UTF8.GetBytes(text[..take], bytes.AsSpan(used));
                text = text[take..];
            }
            return this;
        }

        public void Flush()
        {
            hash.AppendData(bytes, 0, used);
            used = 0;
        }
    }

    // ---- what-if placement (the gRPC Simulate call) ------------------------------------------------

    /// <summary>
    /// The provisioning step on its own: the pods on the free capacity of the snapshot's nodes first,
    /// then on the cheapest new nodes allowed by the options (none when <paramref name="allowNew"/> is false).
    /// <paramref name="bound"/>: the pods already on the snapshot's nodes, whose anti-affinity groups those nodes keep.
    /// </summary>
    public static WhatIfPlacement Place(ClusterSnapshot snap, PodFacts[] pods, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o, bool allowNew = true,
        PodFacts[]? bound = null)
    {
        var region = o.Region ?? MostCommonRegion(snap.Nodes);
        var dsShapes = daemonSets.Select(d => (Shape: ShapeOf(d.Template), Requests: d.Template.Requests)).ToArray();
        var offers = allowNew ? Offers(snap, book, region, o, dsShapes) : [];
        var views = snap.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var shapes = new ShapeIndex(snap.Resources);
        var items = pods.Select((p, i) => shapes.Item(i, p)).ToList();
        var existing = snap.Nodes.Where(IsDestination).OrderBy(n => n.Name, StringComparer.Ordinal)
            .Select((n, i) => new ExistingBin(i, n.Name, FreeOf(n, snap.Resources, o))).ToList();
        var solution = Packer.Solve(Problem(shapes, items, offers, existing, views, AntiAffinityGroups(bound ?? [])));
        var placed = new Dictionary<int, (string Node, bool New)>();
        foreach (var (item, bin) in solution.OnExisting) placed[item] = (existing[bin].Name, false);
        var counter = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var bin in solution.NewBins)
        {
            int n = counter[bin.Type.Name] = counter.GetValueOrDefault(bin.Type.Name) + 1;
            foreach (var i in bin.Items) placed[i] = ($"{bin.Type.Name}#{n}", true);
        }
        var newNodes = solution.NewBins.GroupBy(b => b.Type.Name).Select(g => new NewNode(g.Key, g.Count(), g.First().Type.PricePerHour))
            .OrderBy(n => n.ServerClass, StringComparer.Ordinal).ToList();
        var unplaced = solution.Unplaced.Select(u => (u.Item, u.Reason)).ToList();
        // A pod the packer neither placed nor reported (it should not happen) is still reported, never lost.
        for (int i = 0; i < pods.Length; i++)
            if (!placed.ContainsKey(i) && !unplaced.Any(u => u.Item == i)) unplaced.Add((i, "not placed"));
        return new WhatIfPlacement(placed, unplaced, newNodes, solution.Cost, region);
    }

    /// <summary>A ready, empty node of a class that does not exist yet, reserved as existing nodes of the class are.</summary>
    public static NodeView HypotheticalNode(ClusterSnapshot snap, string name, ServerClass c, long[] allocated, int pods, RecommenderOptions o)
    {
        var (reservedCpu, reservedMem) = Reserved(snap, c, o);
        int count = snap.Resources.Count;
        var capacity = new long[count];
        var allocatable = new long[count];
        capacity[ResourceTable.Cpu] = (long)(c.Cpu * 1000);
        capacity[ResourceTable.Memory] = c.MemoryBytes;
        allocatable[ResourceTable.Cpu] = capacity[ResourceTable.Cpu] - reservedCpu;
        allocatable[ResourceTable.Memory] = capacity[ResourceTable.Memory] - reservedMem;
        capacity[snap.Resources.GpuIndex] = allocatable[snap.Resources.GpuIndex] = GpusOf(c, o);
        var labels = NewNodeLabels(c);
        labels["kubernetes.io/hostname"] = name;
        return new NodeView
        {
            Name = name, Labels = labels, Annotations = new Dictionary<string, string>(), Allocatable = allocatable, Capacity = capacity,
            Allocated = allocated, DaemonSetOverhead = new long[count], Pods = pods, Ready = true, Schedulable = true, Deleting = false,
            Taints = [], NamespaceRequests = new Dictionary<string, long[]>(),
        };
    }
}
