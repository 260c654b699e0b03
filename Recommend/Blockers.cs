namespace Karpetrack;

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
    /// <summary>A cheaper replacement exists, but its new nodes would pass --max-managed-cpu/--max-managed-memory (the blocker's detail says which).</summary>
    public const string ManagedCapacityLimit = "managed_capacity_limit";

    public static readonly string[] All =
    [
        NodeDoNotDisrupt, NodeScaleDownDisabled, NodeNotReady, NodeDeleting, NodeUnpriced, PodDoNotDisrupt, PodSafeToEvictFalse,
        PodLocalStorage, PodNoController, PdbNoDisruptions, KubeSystemWithoutPdb, PodsDoNotFit, NotCheaper, ReceivesPods, ManagedCapacityLimit,
    ];
}

/// <summary>The PodDisruptionBudgets by namespace: which cover a pod, and how much room they leave a command.</summary>
internal sealed class Budgets(Dictionary<string, PdbRecord[]> byNamespace)
{
    public static Budgets Index(PdbRecord[] pdbs) =>
        new(pdbs.GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal));

    /// <summary>The budgets whose selector matches the pod, in index order. A struct enumeration: asked for every pod a command evicts (a Where with a lambda was one closure and one delegate per pod).</summary>
    public CoveringBudgets Covering(PodShape pod) => new(byNamespace.GetValueOrDefault(pod.Namespace) ?? [], pod.Labels);

    public readonly struct CoveringBudgets(PdbRecord[] all, IReadOnlyDictionary<string, string> labels)
    {
        public Enumerator GetEnumerator() => new(all, labels);

        public struct Enumerator(PdbRecord[] all, IReadOnlyDictionary<string, string> labels)
        {
            private int i = -1;
            public readonly PdbRecord Current => all[i];
            public bool MoveNext()
            {
                while (++i < all.Length) if (all[i].Selector.Matches(labels)) return true;
                return false;
            }
        }
    }

    public Disruption Disruption(PodFacts[] evicted)
    {
        int headroom = -1;
        foreach (var p in evicted)
            foreach (var b in Covering(p.Shape))
                headroom = headroom < 0 ? b.DisruptionsAllowed : Math.Min(headroom, b.DisruptionsAllowed);
        return new Disruption(evicted.Length, headroom);
    }
}

/// <summary>Why a node may not be disrupted at all, whatever the room elsewhere: its own state and what its pods say.</summary>
internal static class Blockers
{
    public static List<Blocker> Of(NodeView n, PodFacts[] onNode, Budgets budgets, PriceBook book)
    {
        var list = new List<Blocker>();
        if (n.Annotations.TryGetValue(NodeAnnotations.DoNotDisrupt, out var dnd) && dnd == "true") list.Add(new Blocker(BlockerReasons.NodeDoNotDisrupt, [], []));
        if (n.Annotations.TryGetValue(NodeAnnotations.ScaleDownDisabled, out var sdd) && sdd == "true") list.Add(new Blocker(BlockerReasons.NodeScaleDownDisabled, [], []));
        if (n.Deleting) list.Add(new Blocker(BlockerReasons.NodeDeleting, [], []));
        else if (!n.Ready) list.Add(new Blocker(BlockerReasons.NodeNotReady, [], []));
        if (book.NodePrice(n.ServerClass, n.CapacityType) is null) list.Add(new Blocker(BlockerReasons.NodeUnpriced, [], []));

        SortedDictionary<string, (List<string> Pods, SortedSet<string> Pdbs)>? byReason = null;   // most nodes have none
        void Add(string reason, PodFacts p, string? pdb = null)
        {
            byReason ??= new SortedDictionary<string, (List<string> Pods, SortedSet<string> Pdbs)>(StringComparer.Ordinal);
            if (!byReason.TryGetValue(reason, out var e)) byReason[reason] = e = ([], new SortedSet<string>(StringComparer.Ordinal));
            e.Pods.Add(PodRules.Describe(p));
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
            int covering = 0;
            foreach (var b in budgets.Covering(s))
            {
                covering++;
                if (b.DisruptionsAllowed <= 0) Add(BlockerReasons.PdbNoDisruptions, p, $"{b.Namespace}/{b.Name}");
            }
            if (s.Namespace == "kube-system" && covering == 0) Add(BlockerReasons.KubeSystemWithoutPdb, p);
        }
        if (byReason is not null)
            foreach (var (reason, (podsList, pdbsSet)) in byReason) list.Add(new Blocker(reason, podsList.Order(StringComparer.Ordinal).ToList(), pdbsSet.ToList()));
        return list;
    }
}
