namespace Karpetrack;

/// <summary>
/// The cluster model. Reflectors apply events under one lock; per-node tallies are kept up to date
/// incrementally, so building a snapshot costs O(nodes) and never walks pods.
/// Pods are stored compactly (interned request vectors, no strings) to keep memory per pod small.
/// </summary>
public sealed class ClusterModel
{
    private readonly object gate = new();
    private readonly ResourceTable resources;

    private readonly Dictionary<string, int> nodeIds = new(StringComparer.Ordinal);
    private readonly List<NodeSlot> nodes = [];
    private readonly Stack<int> freeNodeIds = new();

    private readonly UidTable<PodSlot> pods = new();
    private readonly Dictionary<Guid, long> longSuffixes = [];   // the rare name suffixes a PodSlot cannot hold
    private readonly InternTable<RequestVector> requestVectors = new();
    private readonly ShapeTable shapes = new();

    private readonly long[] pendingRequests;
    private int pendingPods;

    private bool podRelist;   // between BeginPodRelist and EndPodRelist: upserts mark their slot Seen
    private HashSet<string>? nodesSeenInRelist;

    private long version;
    private long pendingVersion;

    /// <summary>Bumped whenever the set of pending unschedulable pods changes: the recommender's batch trigger.</summary>
    public long PendingVersion { get { lock (gate) return pendingVersion; } }
    private ClusterSnapshot? snapshot;
    private readonly HashSet<int> dirtyNodes = [];
    private NodeView[] views = [];
    private bool membershipChanged;

    private readonly KeyedStore<PdbRecord> pdbs = new(p => p.Namespace + "/" + p.Name);
    private readonly KeyedStore<DaemonSetRecord> daemonSets = new(d => d.Namespace + "/" + d.Name);

    /// <summary>PodDisruptionBudgets, as the PDB reflector last saw them.</summary>
    public KeyedStore<PdbRecord> Pdbs => pdbs;

    /// <summary>DaemonSets, for the pods they would put on a new node.</summary>
    public KeyedStore<DaemonSetRecord> DaemonSets => daemonSets;

    /// <summary>Where the node reflector puts what it sees.</summary>
    public IReflectorTarget<NodeRecord> NodeTarget => new Nodes(this);

    /// <summary>Where the pod reflector puts what it sees.</summary>
    public IReflectorTarget<PodRecord> PodTarget => new PodsTarget(this);

    private sealed class Nodes(ClusterModel m) : IReflectorTarget<NodeRecord>
    {
        public void BeginRelist() => m.BeginNodeRelist();
        public void Upsert(NodeRecord item) => m.UpsertNode(item);
        public void Delete(NodeRecord item) => m.DeleteNode(item.Name);
        public int EndRelist() => m.EndNodeRelist();
    }

    private sealed class PodsTarget(ClusterModel m) : IReflectorTarget<PodRecord>
    {
        public void BeginRelist() => m.BeginPodRelist();
        public void Upsert(PodRecord item) => m.UpsertPod(item);
        public void Delete(PodRecord item) => m.DeletePod(item.Uid);
        public int EndRelist() => m.EndPodRelist();
    }

    public ClusterModel(ResourceTable resources)
    {
        this.resources = resources;
        pendingRequests = new long[resources.Count];
    }

    public ResourceTable Resources => resources;

    public int PodCount { get { lock (gate) return pods.Count; } }

    private sealed class NodeSlot(string name, int resourceCount)
    {
        public readonly string Name = name;
        public NodeBase? Record;                        // the node object's facts; null while only pods name this node
        public long[] Allocated = new long[resourceCount];
        public long[] DaemonSetOverhead = new long[resourceCount];
        public int Pods;
        // Requests of counted pods per namespace: ids, names and tallies at the same positions. The three arrays are
        // replaced, never changed in place, when a namespace comes or goes, so a view can hold them as they are.
        public int[] NamespaceIds = [];
        public string[] NamespaceNames = [];
        public long[][] NamespaceTallies = [];
        public bool TalliesShared;                      // View holds the arrays above: copy before writing
        public int References;                          // pods that name this node, plus one for the node object
        public NodeView? View;
        public int ViewIndex;                           // position in the sorted views array
    }

    /// <summary>One pod in 16 bytes (32 with its uid in the table): everything else is shared through ids.</summary>
    private struct PodSlot
    {
        public int Node;          // -1 when not bound
        public int Shape;         // id in shapes, which also gives the namespace
        private uint packed;      // id in requestVectors (low 27 bits) and PodFlags (high 5 bits)
        public uint Suffix;       // packed generated-name suffix (Scheduling.PackSuffix), or a marker below

        public const uint NoSuffix = 0;                   // the shape's prefix is the whole name
        public const uint NodeNameSuffix = uint.MaxValue; // the name ends with the node's name (mirror pods)
        public const uint LongSuffix = uint.MaxValue - 1; // packed suffix too large for 32 bits: in longSuffixes

        private const int RequestBits = 27;
        public const int MaxRequests = (1 << RequestBits) - 1;

        public int Requests
        {
            readonly get => (int)(packed & MaxRequests);
            set => packed = (packed & ~(uint)MaxRequests) | (uint)value;
        }

        public PodFlags Flags
        {
            readonly get => (PodFlags)(packed >> RequestBits);
            set => packed = (packed & MaxRequests) | ((uint)value << RequestBits);
        }
    }

    [Flags]
    private enum PodFlags : byte
    {
        None = 0,
        Counted = 1,          // bound and not terminal: holds its reservation on Node
        Overhead = 2,         // DaemonSet or mirror pod
        Pending = 4,          // unschedulable demand
        Terminating = 8,
        Seen = 16,            // upserted since the current relist began
    }

    // ---- pods ----------------------------------------------------------------------------

    public void UpsertPod(PodRecord pod)
    {
        lock (gate)
        {
            if (pods.TryGetValue(pod.Uid, out var old)) Remove(pod.Uid, old);
            var slot = Add(pod);
            if (podRelist) slot.Flags |= PodFlags.Seen;
            pods.Set(pod.Uid, slot);
            version++;
        }
    }

    public void DeletePod(Guid uid)
    {
        lock (gate)
        {
            if (pods.Remove(uid, out var old))
            {
                Remove(uid, old);
                version++;
            }
        }
    }

    /// <summary>Starts a relist: pods not upserted before <see cref="EndPodRelist"/> are deleted.</summary>
    public void BeginPodRelist()
    {
        lock (gate)
        {
            podRelist = true;
            for (int i = 0; i < pods.Count; i++) pods.ValueAt(i).Flags &= ~PodFlags.Seen;
        }
    }

    public int EndPodRelist()
    {
        lock (gate)
        {
            if (!podRelist) return 0;
            podRelist = false;
            int gone = 0;
            // Downward, so the entry that moves into a removed one's place has been looked at already.
            for (int i = pods.Count - 1; i >= 0; i--)
            {
                if ((pods.ValueAt(i).Flags & PodFlags.Seen) != 0) continue;
                var uid = pods.KeyAt(i);
                var old = pods.ValueAt(i);
                pods.RemoveAt(i);
                Remove(uid, old);
                gone++;
            }
            if (gone > 0) version++;
            return gone;
        }
    }

    private PodSlot Add(PodRecord pod)
    {
        var flags = PodFlags.None;
        if (pod.Terminating) flags |= PodFlags.Terminating;
        bool terminal = pod.Phase is PodPhase.Succeeded or PodPhase.Failed;
        int node = -1;
        var vector = RequestsOf(pod);
        int requests = requestVectors.Add(new RequestVector(vector));
        if (requests > PodSlot.MaxRequests) throw new InvalidOperationException("too many distinct request vectors");
        if (!string.IsNullOrEmpty(pod.NodeName))
        {
            node = NodeId(pod.NodeName);
            nodes[node].References++;
            if (!terminal)
            {
                flags |= PodFlags.Counted;
                if (pod.Owner is OwnerKind.DaemonSet or OwnerKind.Mirror) flags |= PodFlags.Overhead;
            }
        }
        else if (pod.Unschedulable && pod.Phase == PodPhase.Pending)
        {
            flags |= PodFlags.Pending;
        }
        var (prefix, suffix) = Scheduling.SplitName(pod.Name, pod.OwnerName);
        bool overhead = pod.Owner is OwnerKind.DaemonSet or OwnerKind.Mirror;
        // Mirror pods are named after their node ("kube-proxy-<node>"): keep the prefix, the node gives the rest.
        if (pod.Owner == OwnerKind.Mirror && pod.NodeName is { Length: > 0 } nn && suffix == 0 && pod.Name.Length > nn.Length + 1 && pod.Name.EndsWith("-" + nn, StringComparison.Ordinal))
            (prefix, suffix) = (pod.Name[..^nn.Length], PodFacts.NodeNameSuffix);
        var slot = new PodSlot { Node = node, Requests = requests, Flags = flags, Shape = shapes.Add(pod, prefix, overhead) };
        if (suffix == PodFacts.NodeNameSuffix) slot.Suffix = PodSlot.NodeNameSuffix;
        else if (suffix >= 0 && suffix < PodSlot.LongSuffix) slot.Suffix = (uint)suffix;
        else { slot.Suffix = PodSlot.LongSuffix; longSuffixes[pod.Uid] = suffix; }
        Account(slot, +1);
        return slot;
    }

    private long[] RequestsOf(PodRecord pod)
    {
        var v = pod.Requests.Length == resources.Count ? pod.Requests : Resize(pod.Requests);
        if (resources.PodsIndex >= 0 && v[resources.PodsIndex] == 0)
        {
            v = (long[])v.Clone();
            v[resources.PodsIndex] = 1;
        }
        return v;
    }

    private long[] Resize(long[] r)
    {
        var v = new long[resources.Count];
        Array.Copy(r, v, Math.Min(r.Length, v.Length));
        return v;
    }

    private long SuffixOf(Guid uid, PodSlot slot) => slot.Suffix switch
    {
        PodSlot.NodeNameSuffix => PodFacts.NodeNameSuffix,
        PodSlot.LongSuffix => longSuffixes[uid],
        var s => s,
    };

    private void Remove(Guid uid, PodSlot slot)
    {
        Account(slot, -1);
        requestVectors.Release(slot.Requests);
        if (slot.Suffix == PodSlot.LongSuffix) longSuffixes.Remove(uid);
        shapes.Release(slot.Shape);
        if (slot.Node >= 0) ReleaseNodeReference(slot.Node);
    }

    private void Account(PodSlot slot, int sign)
    {
        var r = requestVectors[slot.Requests].Values;
        if ((slot.Flags & PodFlags.Counted) != 0)
        {
            var n = nodes[slot.Node];
            if (n.TalliesShared) Unshare(n);
            for (int i = 0; i < r.Length; i++) n.Allocated[i] += sign * r[i];
            if ((slot.Flags & PodFlags.Overhead) != 0)
                for (int i = 0; i < r.Length; i++) n.DaemonSetOverhead[i] += sign * r[i];
            n.Pods += sign;
            int nsId = shapes.NamespaceOf(slot.Shape);
            int at = Array.IndexOf(n.NamespaceIds, nsId);
            if (at < 0)
            {
                at = n.NamespaceIds.Length;
                n.NamespaceIds = [.. n.NamespaceIds, nsId];
                n.NamespaceNames = [.. n.NamespaceNames, shapes.NamespaceName(nsId)];
                n.NamespaceTallies = [.. n.NamespaceTallies, new long[r.Length]];
            }
            var ns = n.NamespaceTallies[at];
            bool empty = true;
            for (int i = 0; i < r.Length; i++) { ns[i] += sign * r[i]; empty &= ns[i] == 0; }
            if (empty && sign < 0)
            {
                n.NamespaceIds = Without(n.NamespaceIds, at);
                n.NamespaceNames = Without(n.NamespaceNames, at);
                n.NamespaceTallies = Without(n.NamespaceTallies, at);
            }
            MarkDirty(slot.Node);
        }
        if ((slot.Flags & PodFlags.Pending) != 0)
        {
            for (int i = 0; i < r.Length; i++) pendingRequests[i] += sign * r[i];
            pendingPods += sign;
            pendingVersion++;
        }
    }

    /// <summary>Copy-on-write for a node's tallies: its view shares them until the next change.</summary>
    private static void Unshare(NodeSlot n)
    {
        n.Allocated = (long[])n.Allocated.Clone();
        n.DaemonSetOverhead = (long[])n.DaemonSetOverhead.Clone();
        var tallies = new long[n.NamespaceTallies.Length][];
        for (int i = 0; i < tallies.Length; i++) tallies[i] = (long[])n.NamespaceTallies[i].Clone();
        n.NamespaceTallies = tallies;
        n.TalliesShared = false;
    }

    private static T[] Without<T>(T[] items, int at)
    {
        if (items.Length == 1) return [];
        var rest = new T[items.Length - 1];
        Array.Copy(items, rest, at);
        Array.Copy(items, at + 1, rest, at, rest.Length - at);
        return rest;
    }

    /// <summary>
    /// Every pod the recommender reasons about (counted on a node, or pending unschedulable), as a
    /// copy taken under the lock: O(pods), for the recommender's timer, never for a scrape. The copy
    /// is sorted after the lock is released: a writer waits for the copy only, not for the sort.
    /// </summary>
    public PodFacts[] Pods()
    {
        PodFacts[] copy;
        lock (gate)
        {
            int count = 0;
            for (int i = 0; i < pods.Count; i++)
                if ((pods.ValueAt(i).Flags & (PodFlags.Counted | PodFlags.Pending)) != 0) count++;
            copy = new PodFacts[count];
            for (int i = 0, k = 0; i < pods.Count; i++)
            {
                var slot = pods.ValueAt(i);
                if ((slot.Flags & (PodFlags.Counted | PodFlags.Pending)) == 0) continue;
                var uid = pods.KeyAt(i);
                copy[k++] = new PodFacts(uid, slot.Node >= 0 ? nodes[slot.Node].Name : null, requestVectors[slot.Requests].Values,
                    shapes[slot.Shape], SuffixOf(uid, slot), (slot.Flags & PodFlags.Pending) != 0, (slot.Flags & PodFlags.Terminating) != 0);
            }
        }
        // Everything the order reads is immutable (names, interned shapes): safe outside the lock.
        // Deterministic order without building names: node, namespace, name prefix, packed suffix, uid.
        Array.Sort(copy, static (a, b) =>
        {
            int c = string.CompareOrdinal(a.Node, b.Node);
            if (c == 0) c = string.CompareOrdinal(a.Shape.Namespace, b.Shape.Namespace);
            if (c == 0) c = string.CompareOrdinal(a.Shape.NamePrefix, b.Shape.NamePrefix);
            if (c == 0) c = a.NameSuffix.CompareTo(b.NameSuffix);
            return c != 0 ? c : a.Uid.CompareTo(b.Uid);
        });
        return copy;
    }

    /// <summary>The pods bound to one node, terminating ones included: what a drain waits for. A scan that copies nothing else.</summary>
    public PodFacts[] PodsOn(string node)
    {
        lock (gate)
        {
            if (!nodeIds.TryGetValue(node, out var id)) return [];
            var list = new List<PodFacts>();
            for (int i = 0; i < pods.Count; i++)
            {
                var slot = pods.ValueAt(i);
                if (slot.Node != id) continue;
                var uid = pods.KeyAt(i);
                list.Add(new PodFacts(uid, node, requestVectors[slot.Requests].Values, shapes[slot.Shape], SuffixOf(uid, slot),
                    (slot.Flags & PodFlags.Pending) != 0, (slot.Flags & PodFlags.Terminating) != 0));
            }
            return list.ToArray();
        }
    }

    public int ShapeCount { get { lock (gate) return shapes.Count; } }

    // ---- nodes ---------------------------------------------------------------------------

    public void UpsertNode(NodeRecord node)
    {
        lock (gate)
        {
            nodesSeenInRelist?.Add(node.Name);
            int id = NodeId(node.Name);
            var slot = nodes[id];
            if (slot.Record is null) { slot.References++; membershipChanged = true; }
            slot.Record = Base(node);
            MarkDirty(id);
            version++;
        }
    }

    public void DeleteNode(string name)
    {
        lock (gate)
        {
            if (!nodeIds.TryGetValue(name, out var id) || nodes[id].Record is null) return;
            nodes[id].Record = null;
            membershipChanged = true;
            MarkDirty(id);
            ReleaseNodeReference(id);
            version++;
        }
    }

    public void BeginNodeRelist()
    {
        lock (gate) nodesSeenInRelist = new HashSet<string>(StringComparer.Ordinal);
    }

    public int EndNodeRelist()
    {
        List<string> gone;
        lock (gate)
        {
            var seen = nodesSeenInRelist;
            nodesSeenInRelist = null;
            if (seen is null) return 0;
            gone = [];
            foreach (var n in nodes)
                if (n.Record is not null && !seen.Contains(n.Name)) gone.Add(n.Name);
        }
        foreach (var name in gone) DeleteNode(name);
        return gone.Count;
    }

    private int NodeId(string name)
    {
        if (nodeIds.TryGetValue(name, out var id)) return id;
        var slot = new NodeSlot(name, resources.Count);
        if (freeNodeIds.TryPop(out id)) nodes[id] = slot;
        else { id = nodes.Count; nodes.Add(slot); }
        nodeIds[name] = id;
        return id;
    }

    private void ReleaseNodeReference(int id)
    {
        var slot = nodes[id];
        if (--slot.References > 0) return;
        nodeIds.Remove(slot.Name);
        dirtyNodes.Remove(id);
        freeNodeIds.Push(id);
    }

    private void MarkDirty(int id)
    {
        nodes[id].View = null;
        dirtyNodes.Add(id);
    }

    // ---- snapshots -----------------------------------------------------------------------

    /// <summary>
    /// A consistent view of the model. Only nodes changed since the last snapshot get new views,
    /// so the cost is O(changed nodes) plus one array copy when membership changed.
    /// </summary>
    public ClusterSnapshot Snapshot()
    {
        // Nothing changed since the last snapshot: no lock, so a scrape never queues behind a writer
        // or the recommender's copy. A change racing this read just means the snapshot of a moment ago.
        var current = Volatile.Read(ref snapshot);
        if (current is not null && current.Version == Volatile.Read(ref version)) return current;
        lock (gate)
        {
            if (snapshot is not null && snapshot.Version == version) return snapshot;
            foreach (var id in dirtyNodes)
            {
                var slot = nodes[id];
                if (slot.Record is not null) slot.View = BuildView(slot);
            }
            if (membershipChanged)
            {
                var list = new List<NodeSlot>(nodeIds.Count);
                foreach (var id in nodeIds.Values)
                    if (nodes[id].Record is not null) list.Add(nodes[id]);
                list.Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name));
                views = new NodeView[list.Count];
                for (int i = 0; i < list.Count; i++)
                {
                    list[i].ViewIndex = i;
                    views[i] = list[i].View ??= BuildView(list[i]);
                }
                membershipChanged = false;
            }
            else if (dirtyNodes.Count > 0)
            {
                views = (NodeView[])views.Clone();
                foreach (var id in dirtyNodes)
                {
                    var slot = nodes[id];
                    if (slot.Record is not null && slot.View is not null) views[slot.ViewIndex] = slot.View;
                }
            }
            dirtyNodes.Clear();
            var next = new ClusterSnapshot
            {
                Resources = resources,
                Nodes = views,
                PendingRequests = (long[])pendingRequests.Clone(),
                PendingPods = pendingPods,
                Version = version,
            };
            Volatile.Write(ref snapshot, next);
            return next;
        }
    }

    /// <summary>
    /// What the model keeps of a node object: not the decoded record (its Dictionaries, resource version), but its
    /// labels on shared layouts, the kept annotations (almost always none: one shared empty map) and the rest as is.
    /// </summary>
    private sealed class NodeBase
    {
        public required NodeLabels Labels, Annotations;
        public required long[] Allocatable, Capacity;
        public required bool Ready, Unschedulable, Deleting;
        public required Taint[] Taints;
        public DateTimeOffset? Created;
    }

    private readonly LabelLayouts labelLayouts = new();

    private NodeBase Base(NodeRecord r) => new()
    {
        Labels = NodeLabels.Of(r.Labels, labelLayouts),
        Annotations = NodeLabels.Of(r.Annotations, labelLayouts),
        Allocatable = Fit(r.Allocatable),
        Capacity = Fit(r.Capacity),
        Ready = r.Ready,
        Unschedulable = r.Unschedulable,
        Deleting = r.Deleting,
        Taints = r.Taints,
        Created = r.Created,
    };

    private NodeView BuildView(NodeSlot slot)
    {
        var r = slot.Record!;
        // The view takes the tallies as they are (no copies); the model copies them before its next change.
        slot.TalliesShared = true;
        return new NodeView
        {
            Name = slot.Name,
            Labels = r.Labels,
            Annotations = r.Annotations,
            Allocatable = r.Allocatable,
            Capacity = r.Capacity,
            Allocated = slot.Allocated,
            DaemonSetOverhead = slot.DaemonSetOverhead,
            Pods = slot.Pods,
            Ready = r.Ready,
            Schedulable = !r.Unschedulable,
            Deleting = r.Deleting,
            Taints = r.Taints,
            Created = r.Created,
            NamespaceRequests = slot.NamespaceIds.Length == 0 ? SmallMap<long[]>.Empty : new SmallMap<long[]>(slot.NamespaceNames, slot.NamespaceTallies),
        };
    }

    private long[] Fit(long[] v) => v.Length == resources.Count ? v : Resize(v);

    /// <summary>Interned request vectors: pods of one workload share one array.</summary>
    private readonly record struct RequestVector(long[] Values)
    {
        public bool Equals(RequestVector other) => Values.AsSpan().SequenceEqual(other.Values);

        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var v in Values) h.Add(v);
            return h.ToHashCode();
        }
    }
}
