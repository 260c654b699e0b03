namespace Karpetrack;

/// <summary>
/// Constraint classes: one per distinct (pod shape, wants a GPU), so the packer asks each
/// placement question once per class, and GPU classes are offered only to pods that request GPUs.
/// </summary>
internal sealed class ShapeIndex(ResourceTable table)
{
    private readonly Dictionary<(PodShape, bool), int> ids = [];
    private readonly Dictionary<string, int> groups = new(StringComparer.Ordinal);
    private readonly List<(PodShape Shape, bool Gpu)> classes = [];
    private readonly List<PackItem> items = [];

    /// <summary>
    /// Empties the index for the next packing, keeping its tables' room: classes and groups are numbered from 0 again,
    /// as in a new index. For a run's many small packings one after the other (<see cref="PlanState.Shapes"/>); a problem
    /// built before must not be used after.
    /// </summary>
    public ShapeIndex Reset()
    {
        ids.Clear(); groups.Clear(); classes.Clear(); items.Clear();
        return this;
    }

    /// <summary>The items of these pods (item i is pod i), in a list the index reuses after <see cref="Reset"/>.</summary>
    public List<PackItem> Items(PodFacts[] pods)
    {
        items.Clear();
        for (int i = 0; i < pods.Length; i++) items.Add(Item(i, pods[i]));
        return items;
    }

    public PackItem Item(int id, PodFacts p)
    {
        var (demand, c, group) = Key(p);
        return new PackItem(id, demand, c, group);
    }

    /// <summary>What an item of this pod would hold (its demand, constraint class and anti-affinity group), numbering classes and groups as <see cref="Item"/> does.</summary>
    public (Demand Demand, int Constraint, int Group) Key(PodFacts p)
    {
        var demand = PodRules.DemandOf(p, table);
        var key = (p.Shape, demand.Gpu > 0);
        if (!ids.TryGetValue(key, out var c)) { ids[key] = c = classes.Count; classes.Add(key); }
        return (demand, c, AntiAffinityGroup(p.Shape));
    }

    /// <summary>Pods that repel their own kind share a group, keyed by the term (see PodShape.SelfAntiAffinityKey).</summary>
    private int AntiAffinityGroup(PodShape s)
    {
        if (s.SelfAntiAffinityKey is not { } key) return -1;
        if (!groups.TryGetValue(key, out var g)) groups[key] = g = groups.Count;
        return g;
    }

    /// <summary>The packing problem of these items over the offers and existing bins: offers as the items' classes allow them.</summary>
    public PackingProblem Problem(IReadOnlyList<PackItem> items, List<Offer> offers, IReadOnlyList<ExistingBin> existing, Func<int, ExistingBin, bool> binAllows) => new()
    {
        Items = items,
        Types = offers.Select(x => x.Bin).ToList(),
        Existing = existing,
        TypeAllows = (c, t) => (!offers[t.Id].Gpu || classes[c].Gpu) && classes[c].Shape.AllowsNode(offers[t.Id].Labels, offers[t.Id].Taints),
        BinAllows = binAllows,
    };

    /// <summary>The node's labels and taints allow the class, and it holds no pod of the class's anti-affinity group.</summary>
    public bool AllowsNode(int c, NodeView n, HashSet<string>? groupsOnNode) =>
        !(groupsOnNode is not null && classes[c].Shape.SelfAntiAffinityKey is { } key && groupsOnNode.Contains(key))
        && classes[c].Shape.AllowsNode(n.Labels, n.Taints);
}

/// <summary>
/// One packer call for a set of pods: onto the room left on the open nodes (some left out) and the offered classes,
/// each placement checked against the pod's constraints.
/// </summary>
/// <remarks>
/// The packer keeps anti-affine items apart only among the items it places; what already runs on an existing
/// node is answered here (the room's groups), once per constraint class and node, as labels and taints are.
/// </remarks>
internal sealed record PackedPods(PodFacts[] Pods, IReadOnlyList<PackItem> Items, IReadOnlyList<ExistingBin> Existing, PackingSolution Solution)
{
    public static PackedPods Solve(Room room, PodFacts[] pods, List<Offer> offers, ResourceTable table, IReadOnlySet<string>? leaveOut = null)
    {
        var shapes = new ShapeIndex(table);
        var items = pods.Select((p, i) => shapes.Item(i, p)).ToList();
        var existing = room.Bins(leaveOut);
        var at = existing.Select(b => room.IndexOf(b.Name)).ToArray();   // bin id → room position, not a name lookup per (class, bin)
        var solution = Packer.Solve(shapes.Problem(items, offers, existing, (c, b) => shapes.AllowsNode(c, room.View(at[b.Id]), room.GroupsOn(at[b.Id]))));
        return new PackedPods(pods, items, existing, solution);
    }

    /// <summary>What the placements on existing nodes take of their room, with the anti-affinity groups they bring there.</summary>
    public IReadOnlyList<RoomClaim> Claims() =>
        Solution.OnExisting.Select(kv => new RoomClaim(Existing[kv.Value].Name, Items[kv.Key].Demand, Pods[kv.Key].Shape.SelfAntiAffinityKey)).ToList();

    public NewCapacity NewNodes() => new(Solution.NewBins);
}

/// <summary>
/// The new nodes of a packing: by class in name order with their count and price, and each bin named
/// "&lt;class&gt;#n", n counting the bins of its class in the order the packer opened them.
/// </summary>
internal sealed class NewCapacity(IReadOnlyList<PlacedBin> bins)
{
    public IReadOnlyList<NewNode> Nodes { get; } = bins.GroupBy(b => b.Type.Name)
        .Select(g => new NewNode(g.Key, g.Count(), g.First().Type.PricePerHour))
        .OrderBy(n => n.ServerClass, StringComparer.Ordinal).ToList();

    /// <summary>Each item on a new node with that node's name, bin by bin (each name built once).</summary>
    public IEnumerable<(int Item, string Node)> Placements()
    {
        var counter = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var bin in bins)
        {
            int n = counter[bin.Type.Name] = counter.GetValueOrDefault(bin.Type.Name) + 1;
            var name = $"{bin.Type.Name}#{n}";
            foreach (var i in bin.Items) yield return (i, name);
        }
    }

    /// <summary>The moves of the pods placed on new nodes (items index <paramref name="pods"/>), from where each runs now ("" when pending).</summary>
    public void AddMoves(List<PodMove> moves, PodFacts[] pods)
    {
        foreach (var (i, node) in Placements()) moves.Add(new PodMove(pods[i], pods[i].Node ?? "", node));
    }

    /// <summary>"2× gp.vs1.large-iad, 1× mh.vs1.medium-iad", for reasons.</summary>
    public string Describe() => string.Join(", ", Nodes.Select(n => $"{n.Count}× {n.ServerClass}"));
}
