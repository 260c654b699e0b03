namespace Karpetrack;

/// <summary>What a command takes of a kept node's room: a pod's demand, and its anti-affinity group if it has one.</summary>
internal readonly record struct RoomClaim(string Node, Demand Demand, string? Group);

/// <summary>
/// The room left on the nodes that may receive pods (ready, schedulable, not being deleted; and, while pending pods
/// are placed, the nodes being provisioned), with the anti-affinity groups each holds. A node claimed by a command is
/// closed, as are the nodes being provisioned once pending pods are placed. Kept by position, so that the scans of
/// the removal methods do not hash names.
/// </summary>
internal sealed class Room
{
    private readonly NodeView[] views;                 // in name order (ordinal): the packer's existing bins are listed in it
    private readonly Dictionary<string, int> index = new(StringComparer.Ordinal);
    private readonly Demand[] free;
    private readonly HashSet<string>?[] groups;
    private readonly bool[] closed;
    private readonly bool[] provisioning;

    private Room(List<(NodeView View, Demand Free, bool Provisioning)> nodes, Dictionary<string, HashSet<string>> groupsByNode)
    {
        // A name given twice (two in-flight entries of one pool) keeps its last entry.
        var byName = new Dictionary<string, (NodeView View, Demand Free, bool Provisioning)>(StringComparer.Ordinal);
        foreach (var n in nodes) byName[n.View.Name] = n;
        var ordered = byName.Values.OrderBy(n => n.View.Name, StringComparer.Ordinal).ToArray();
        views = new NodeView[ordered.Length];
        free = new Demand[ordered.Length];
        groups = new HashSet<string>?[ordered.Length];
        closed = new bool[ordered.Length];
        provisioning = new bool[ordered.Length];
        for (int i = 0; i < ordered.Length; i++)
        {
            (views[i], free[i], provisioning[i]) = ordered[i];
            index[views[i].Name] = i;
            groups[i] = groupsByNode.GetValueOrDefault(views[i].Name);
        }
    }

    /// <summary>
    /// The snapshot's nodes that may receive pods, plus the nodes being provisioned (of classes still offered), whose
    /// whole capacity waits for pending pods; <paramref name="bound"/>: the pods whose anti-affinity groups the nodes hold.
    /// </summary>
    public static Room Of(ClusterSnapshot snap, PodFacts[] bound, RecommenderOptions o, IReadOnlyList<InFlightNode> inFlight, List<Offer> offers)
    {
        var nodes = snap.Nodes.Where(IsDestination).Select(n => (n, FreeOf(n, snap.Resources, o), false)).ToList();
        foreach (var f in inFlight)
        {
            // A class no longer offered (price cap, category) still gets its node; it just is not counted on here.
            var offer = offers.FirstOrDefault(x => x.Bin.Name == f.ServerClass);
            if (offer is null) continue;
            var name = Recommender.ProvisioningPrefix + f.Pool;
            var zeros = new long[snap.Resources.Count];
            var view = new NodeView
            {
                Name = name,
                Labels = new Dictionary<string, string>(offer.Labels, StringComparer.Ordinal) { [SpotLabels.Pool] = f.Pool },
                Annotations = new Dictionary<string, string>(),
                Allocatable = zeros, Capacity = zeros, Allocated = zeros, DaemonSetOverhead = zeros,
                Pods = 0, Ready = false, Schedulable = true, Deleting = false, Taints = offer.Taints,
                NamespaceRequests = new Dictionary<string, long[]>(),
            };
            nodes.Add((view, offer.Bin.Capacity, true));
        }
        return new Room(nodes, PodRules.AntiAffinityGroups(bound));
    }

    public static bool IsDestination(NodeView n) => n.Ready && n.Schedulable && !n.Deleting;

    /// <summary>The node's fullest resource, cpu or memory: removals take the emptiest first and fill the fullest first.</summary>
    public static double Utilization(NodeView n) => Math.Max(n.Utilization(ResourceTable.Cpu), n.Utilization(ResourceTable.Memory));

    private static Demand FreeOf(NodeView n, ResourceTable t, RecommenderOptions o) =>
        new(n.Allocatable[ResourceTable.Cpu] - n.Allocated[ResourceTable.Cpu], n.Allocatable[ResourceTable.Memory] - n.Allocated[ResourceTable.Memory],
            PodRules.Gpus(n.Allocatable, t) - PodRules.Gpus(n.Allocated, t), o.MaxPodsPerNode - n.Pods);

    public int Count => views.Length;

    public int IndexOf(string node) => index.TryGetValue(node, out var i) ? i : -1;

    public NodeView View(int i) => views[i];
    public NodeView View(string node) => views[index[node]];
    public Demand Free(int i) => free[i];
    public HashSet<string>? GroupsOn(int i) => groups[i];
    public HashSet<string>? GroupsOn(string node) => groups[index[node]];
    public bool IsOpen(int i) => !closed[i];
    public bool IsProvisioning(int i) => provisioning[i];

    /// <summary>The open nodes but <paramref name="leaveOut"/> as the packer's existing bins, in name order.</summary>
    public List<ExistingBin> Bins(IReadOnlySet<string>? leaveOut = null)
    {
        var bins = new List<ExistingBin>();
        for (int i = 0; i < views.Length; i++)
            if (!closed[i] && !(leaveOut?.Contains(views[i].Name) ?? false)) bins.Add(new ExistingBin(bins.Count, views[i].Name, free[i]));
        return bins;
    }

    public void Take(RoomClaim claim)
    {
        int i = index[claim.Node];
        free[i] = free[i] - claim.Demand;
        if (claim.Group is not null) (groups[i] ??= new HashSet<string>(StringComparer.Ordinal)).Add(claim.Group);
    }

    public void Close(string node)
    {
        if (index.TryGetValue(node, out var i)) closed[i] = true;
    }

    /// <summary>Nodes being provisioned take pending pods only: they receive nothing else (they are not up yet).</summary>
    public void CloseProvisioning()
    {
        for (int i = 0; i < views.Length; i++) if (provisioning[i]) closed[i] = true;
    }
}
