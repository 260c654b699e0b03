namespace Karpetrack;

/// <summary>
/// A what-if, as the Simulate call takes it: nodes removed, nodes replaced by a node of another class, pods
/// added; optionally the categories and the region new nodes may be bought in instead of the options'.
/// </summary>
public sealed record WhatIfRequest(
    IReadOnlyList<string> RemoveNodes,
    IReadOnlyList<WhatIfReplacement> ReplaceNodes,
    IReadOnlyList<WhatIfPod> AddPods,
    IReadOnlyList<string> Categories,
    string Region)
{
    public static readonly WhatIfRequest Nothing = new([], [], [], [], "");
}

public sealed record WhatIfReplacement(string Node, string ServerClass);

/// <summary>A pod to add: requests as quantities are written ("500m", "2Gi"; empty for none), in namespace "default" when none is given.</summary>
public sealed record WhatIfPod(string Name, string Namespace, string Cpu, string Memory,
    IReadOnlyDictionary<string, string> Labels, IReadOnlyDictionary<string, string> NodeSelector);

/// <summary>Where a pod goes ("ns/name"): from its node ("" for an added pod) to a node, a replacement "old→class", or a new "class#n".</summary>
public sealed record WhatIfMove(string Pod, string From, string Node, bool NewNode);

public sealed record UnplacedPod(string Pod, string Reason);

/// <summary>
/// The answer: where every displaced or added pod goes, the pods that no longer fit on their node's replacement,
/// those that fit nowhere, the new nodes bought, and the hourly cost of the cluster before and after.
/// </summary>
public sealed record WhatIfResult(
    IReadOnlyList<WhatIfMove> Placements,
    IReadOnlyList<UnplacedPod> NoLongerFit,
    IReadOnlyList<UnplacedPod> Unplaceable,
    IReadOnlyList<NewNode> NewNodes,
    decimal CostBeforePerHour,
    decimal CostAfterPerHour,
    IReadOnlyList<string> Notes)
{
    public decimal DeltaPerHour => CostAfterPerHour - CostBeforePerHour;
}

/// <summary>Why a what-if cannot be answered: a node it names does not exist, or some of it is invalid.</summary>
public sealed class WhatIfException(bool notFound, string message) : Exception(message)
{
    public bool NotFound { get; } = notFound;
}

/// <summary>
/// The what-if engine, pure like the recommender: the pods of removed nodes and the added pods are placed on the
/// remaining nodes' free room first, then on the cheapest new nodes. A replaced node's pods go to its replacement
/// first; those that do not fit there are listed, then placed like the others. Nothing in the cluster changes.
/// </summary>
public static class WhatIf
{
    /// <param name="ct">Checked between the steps (each replacement, the placement): a cancelled what-if stops there with OperationCanceledException.</param>
    public static WhatIfResult Simulate(ClusterSnapshot snap, PodFacts[] pods, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions options,
        WhatIfRequest request, CancellationToken ct = default)
    {
        ct.ThrowIfCancellationRequested();
        var o = Narrowed(options, request, book);
        var (removed, replacements) = Targets(snap, book, request);
        var added = request.AddPods.Select((p, i) => NewPod(p, i, snap.Resources)).ToList();

        decimal before = 0, after = 0;
        foreach (var n in snap.Nodes)
        {
            var price = book.NodePrice(n.ServerClass, n.CapacityType) ?? 0;
            before += price;
            if (!removed.Contains(n.Name)) after += price;
        }
        var displaced = pods.Where(p => p.Node is not null && removed.Contains(p.Node) && !p.IsOverhead && !p.Terminating).ToArray();
        var remaining = snap.Nodes.Where(n => !removed.Contains(n.Name)).ToList();
        var placements = new List<WhatIfMove>();
        var noLongerFit = new List<UnplacedPod>();
        var toPlace = displaced.Where(p => !replacements.Any(r => r.Old.Name == p.Node)).Select(p => (Pod: p, From: p.Node!)).ToList();
        var kept = new List<PodFacts>();   // pods staying with their node's replacement: its anti-affinity groups

        foreach (var (old, cls) in replacements)
        {
            ct.ThrowIfCancellationRequested();
            after += book.Classes[cls.Name].Prices.SpotPrice;
            var r = Replacement(snap, book, o, old, cls, displaced.Where(p => p.Node == old.Name).ToArray());
            placements.AddRange(r.Kept.Select(p => new WhatIfMove(PodRules.Describe(p), old.Name, r.Node.Name, false)));
            noLongerFit.AddRange(r.Left.Select(p => new UnplacedPod(PodRules.Describe(p), WhyNotFit(p, r.Empty))));
            toPlace.AddRange(r.Left.Select(p => (p, old.Name)));
            kept.AddRange(r.Kept.Select(p => p with { Node = r.Node.Name, Pending = false }));
            remaining.Add(r.Node);
        }
        toPlace.AddRange(added.Select(p => (p, "")));

        var modified = new ClusterSnapshot
        {
            Resources = snap.Resources, Nodes = remaining.OrderBy(n => n.Name, StringComparer.Ordinal).ToArray(),
            PendingRequests = snap.PendingRequests, PendingPods = snap.PendingPods, Version = snap.Version,
        };
        var facts = toPlace.Select(x => x.Pod with { Node = null, Pending = true }).ToArray();
        ct.ThrowIfCancellationRequested();
        var result = Place(modified, facts, daemonSets, book, o, bound: [.. pods, .. kept]);
        for (int i = 0; i < facts.Length; i++)
            if (result.Placed.TryGetValue(i, out var where))
                placements.Add(new WhatIfMove(PodRules.Describe(facts[i]), toPlace[i].From, where.Node, where.New));
        var unplaceable = result.Unplaced.Select(u => new UnplacedPod(PodRules.Describe(facts[u.Item]), u.Reason)).ToList();
        after += result.NewCostPerHour;
        var notes = new List<string>();
        if (facts.Length == 0 && replacements.Count == 0) notes.Add("nothing to place");
        if (result.NewNodes.Count > 0) notes.Add($"new nodes are bought in region {result.Region}");
        notes.Add("read-only: nothing in the cluster was changed");
        return new WhatIfResult(placements, noLongerFit, unplaceable, result.NewNodes, before, after, notes);
    }

    /// <summary>The options with the request's categories and region, each checked against what exists.</summary>
    private static RecommenderOptions Narrowed(RecommenderOptions o, WhatIfRequest request, PriceBook book)
    {
        if (request.Categories.Count > 0)
        {
            var codes = new List<string>();
            foreach (var c in request.Categories)
                codes.Add(Categories.CodeOf(c) ?? throw new WhatIfException(false, $"category \"{c}\" is not one of gp, ch, mh, gpu"));
            o = o with { Categories = codes };
        }
        if (request.Region.Length > 0)
        {
            if (!book.Classes.Values.Any(c => c.Class.Region == request.Region))
                throw new WhatIfException(false, $"no server class is priced in region \"{request.Region}\"");
            o = o with { Region = request.Region };
        }
        return o;
    }

    /// <summary>The nodes removed (replaced ones included) and the replacements, each node named once and existing, each class priced.</summary>
    private static (HashSet<string> Removed, List<(NodeView Old, ServerClass New)> Replacements) Targets(ClusterSnapshot snap, PriceBook book, WhatIfRequest request)
    {
        var byName = snap.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var removed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in request.RemoveNodes)
        {
            if (!byName.ContainsKey(name)) throw new WhatIfException(true, $"node \"{name}\" not found");
            if (!removed.Add(name)) throw new WhatIfException(false, $"node \"{name}\" named twice");
        }
        var replacements = new List<(NodeView Old, ServerClass New)>();
        foreach (var r in request.ReplaceNodes)
        {
            if (!byName.TryGetValue(r.Node, out var old)) throw new WhatIfException(true, $"node \"{r.Node}\" not found");
            if (!book.Classes.TryGetValue(r.ServerClass, out var cls)) throw new WhatIfException(false, $"server class \"{r.ServerClass}\" is not in the price book");
            if (!removed.Add(r.Node)) throw new WhatIfException(false, $"node \"{r.Node}\" named twice");
            replacements.Add((old, cls.Class));
        }
        return (removed, replacements);
    }

    /// <summary>A replaced node's pods on its replacement alone (no new nodes): those kept, those left over, and the replacement as it ends up.</summary>
    private sealed record ReplacementFit(NodeView Node, NodeView Empty, List<PodFacts> Kept, List<PodFacts> Left);

    private static ReplacementFit Replacement(ClusterSnapshot snap, PriceBook book, RecommenderOptions o, NodeView old, ServerClass cls, PodFacts[] onOld)
    {
        var name = $"{old.Name}→{cls.Name}";
        var own = onOld.Select(p => p with { Node = null, Pending = true }).ToArray();
        var empty = HypotheticalNode(snap, name, cls, (long[])old.DaemonSetOverhead.Clone(), 0, o);
        var alone = new ClusterSnapshot { Resources = snap.Resources, Nodes = [empty], PendingRequests = snap.PendingRequests, PendingPods = 0, Version = snap.Version };
        var placement = Place(alone, own, [], book, o, allowNew: false);
        var used = (long[])old.DaemonSetOverhead.Clone();
        var kept = new List<PodFacts>();
        var left = new List<PodFacts>();
        for (int i = 0; i < own.Length; i++)
        {
            if (!placement.Placed.ContainsKey(i)) { left.Add(own[i]); continue; }
            for (int k = 0; k < used.Length && k < own[i].Requests.Length; k++) used[k] += own[i].Requests[k];
            kept.Add(own[i]);
        }
        return new ReplacementFit(HypotheticalNode(snap, name, cls, used, kept.Count, o), empty, kept, left);
    }

    /// <summary>Where each pod (by index) went: an existing node or "&lt;class&gt;#n"; the pods that fit nowhere and why.</summary>
    private sealed record Placement(
        IReadOnlyDictionary<int, (string Node, bool New)> Placed,
        IReadOnlyList<(int Item, string Reason)> Unplaced,
        IReadOnlyList<NewNode> NewNodes,
        decimal NewCostPerHour,
        string Region);

    /// <summary>
    /// The provisioning step on its own: the pods on the free capacity of the snapshot's nodes first,
    /// then on the cheapest new nodes allowed by the options (none when <paramref name="allowNew"/> is false).
    /// <paramref name="bound"/>: the pods already on the snapshot's nodes, whose anti-affinity groups those nodes keep.
    /// </summary>
    private static Placement Place(ClusterSnapshot snap, PodFacts[] pods, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o, bool allowNew = true,
        PodFacts[]? bound = null)
    {
        var region = Offers.Region(snap, o);
        var offers = allowNew ? Offers.For(snap, book, region, o, daemonSets) : [];
        var packed = PackedPods.Solve(Room.Of(snap, bound ?? [], o, [], offers), pods, offers, snap.Resources);
        var solution = packed.Solution;
        var placed = new Dictionary<int, (string Node, bool New)>();
        foreach (var (item, bin) in solution.OnExisting) placed[item] = (packed.Existing[bin].Name, false);
        var capacity = packed.NewNodes();
        foreach (var (i, node) in capacity.Placements()) placed[i] = (node, true);
        var unplaced = solution.Unplaced.Select(u => (u.Item, u.Reason)).ToList();
        // A pod the packer neither placed nor reported (it should not happen) is still reported, never lost.
        for (int i = 0; i < pods.Length; i++)
            if (!placed.ContainsKey(i) && !unplaced.Any(u => u.Item == i)) unplaced.Add((i, "not placed"));
        return new Placement(placed, unplaced, capacity.Nodes, solution.Cost, region);
    }

    /// <summary>A ready, empty node of a class that does not exist yet, reserved as existing nodes of the class are.</summary>
    private static NodeView HypotheticalNode(ClusterSnapshot snap, string name, ServerClass c, long[] allocated, int pods, RecommenderOptions o)
    {
        var (reservedCpu, reservedMem) = Offers.Reserved(snap, c, o);
        int count = snap.Resources.Count;
        var capacity = new long[count];
        var allocatable = new long[count];
        capacity[ResourceTable.Cpu] = (long)(c.Cpu * 1000);
        capacity[ResourceTable.Memory] = c.MemoryBytes;
        allocatable[ResourceTable.Cpu] = capacity[ResourceTable.Cpu] - reservedCpu;
        allocatable[ResourceTable.Memory] = capacity[ResourceTable.Memory] - reservedMem;
        capacity[snap.Resources.GpuIndex] = allocatable[snap.Resources.GpuIndex] = Offers.GpusOf(c, o);
        var labels = Offers.NewNodeLabels(c);
        labels["kubernetes.io/hostname"] = name;
        return new NodeView
        {
            Name = name, Labels = labels, Annotations = new Dictionary<string, string>(), Allocatable = allocatable, Capacity = capacity,
            Allocated = allocated, DaemonSetOverhead = new long[count], Pods = pods, Ready = true, Schedulable = true, Deleting = false,
            Taints = [], NamespaceRequests = new Dictionary<string, long[]>(),
        };
    }

    private static string WhyNotFit(PodFacts p, NodeView node)
    {
        var cpu = p.Requests[ResourceTable.Cpu] / 1000.0;
        var mem = p.Requests[ResourceTable.Memory] / (double)(1L << 30);
        var freeCpu = node.Allocatable[ResourceTable.Cpu] / 1000.0;
        var freeMem = node.Allocatable[ResourceTable.Memory] / (double)(1L << 30);
        return p.Requests[ResourceTable.Cpu] > node.Allocatable[ResourceTable.Cpu] || p.Requests[ResourceTable.Memory] > node.Allocatable[ResourceTable.Memory]
            ? $"needs {cpu:0.###} cpu and {mem:0.##} GiB; {node.ServerClass} allocates at most {freeCpu:0.###} cpu and {freeMem:0.##} GiB"
            : $"does not fit on {node.ServerClass} together with the other pods of the node";
    }

    /// <summary>An added pod as a pending pod of a ReplicaSet; its uid is derived from its place in the request, so answers repeat.</summary>
    private static PodFacts NewPod(WhatIfPod p, int index, ResourceTable table)
    {
        if (string.IsNullOrWhiteSpace(p.Name)) throw new WhatIfException(false, $"add_pods[{index}]: name is required");
        var requests = new long[table.Count];
        requests[ResourceTable.Cpu] = Request(p.Cpu, ResourceTable.Cpu, $"add_pods[{index}].cpu", table);
        requests[ResourceTable.Memory] = Request(p.Memory, ResourceTable.Memory, $"add_pods[{index}].memory", table);
        var ns = p.Namespace.Length > 0 ? p.Namespace : "default";
        var shape = new PodShape
        {
            Namespace = ns, Owner = OwnerKind.ReplicaSet, NamePrefix = p.Name,
            Traits = PodTraits.None, Priority = 0,
            Labels = new Dictionary<string, string>(p.Labels, StringComparer.Ordinal),
            NodeSelector = new Dictionary<string, string>(p.NodeSelector, StringComparer.Ordinal),
            RequiredNodeTerms = [], Tolerations = [], AntiAffinity = [],
        };
        return new PodFacts(Json.StableGuid($"what-if/{index}/{ns}/{p.Name}"), null, requests, shape, 0, Pending: true, Terminating: false);
    }

    private static long Request(string text, int resource, string field, ResourceTable table)
    {
        if (text.Length == 0) return 0;
        if (!Quantity.TryParse(text, out var q, out var error) || q.Value < 0)
            throw new WhatIfException(false, $"{field}: \"{text}\" is not a quantity ({error ?? "negative"})");
        return table.ToStored(resource, q);
    }
}
