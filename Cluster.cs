using System.Runtime.InteropServices;

namespace Karpetrack;

public enum PodPhase : byte { Unknown, Pending, Running, Succeeded, Failed }

/// <summary>How a pod's controller is counted: DaemonSet and mirror (static) pods are per-node overhead.</summary>
public enum OwnerKind : byte { None, DaemonSet, Mirror, ReplicaSet, StatefulSet, Job, Other }

public sealed record Taint(string Key, string? Value, string Effect);

/// <summary>A pod trimmed to what Karpetrack uses, decoded straight from the API stream.</summary>
public sealed class PodRecord
{
    public Guid Uid;
    public string Namespace = "";
    public string Name = "";
    public string? NodeName;
    public PodPhase Phase;
    public bool Terminating;
    public bool Unschedulable;
    public OwnerKind Owner;
    public string? OwnerName;
    public long[] Requests = [];
    public string? ResourceVersion;
    public PodTraits Traits;
    public int Priority;
    // Raw JSON of the scheduling-relevant parts, interned by the model into a shared PodShape.
    public byte[] LabelsJson = [];
    public byte[] NodeSelectorJson = [];
    public byte[] AffinityJson = [];
    public byte[] TolerationsJson = [];
}

/// <summary>A node trimmed to what Karpetrack uses.</summary>
public sealed class NodeRecord
{
    public string Name = "";
    public Dictionary<string, string> Labels = new(StringComparer.Ordinal);
    public Dictionary<string, string> Annotations = new(StringComparer.Ordinal);
    public long[] Allocatable = [];
    public long[] Capacity = [];
    public bool Unschedulable;
    public bool Ready;
    public bool Deleting;
    public Taint[] Taints = [];
    public DateTimeOffset? Created;
    public string? ResourceVersion;
}

/// <summary>Well-known Spot node labels (spot-api.md §2.9).</summary>
public static class SpotLabels
{
    public const string ServerClass = "servers.ngpc.rxt.io/class";
    public const string CapacityType = "servers.ngpc.rxt.io/type";
    public const string Pool = "nodepool.ngpc.rxt.io/name";
    public const string TopologyRegion = "topology.kubernetes.io/region";

    private static readonly Dictionary<string, string> RegionBySuffix = new(StringComparer.Ordinal)
    {
        ["syd"] = "aus-syd-1", ["hkg"] = "hkg-hkg-1", ["lon"] = "uk-lon-1", ["dfw"] = "us-central-dfw-1",
        ["dfw2"] = "us-central-dfw-2", ["ord"] = "us-central-ord-1", ["iad"] = "us-east-iad-1", ["sjc"] = "us-west-sjc-1",
    };

    /// <summary>The Spot region a class name embeds (`gp.vs1.medium-iad` → `us-east-iad-1`), if known.</summary>
    public static string? RegionOfClass(string? serverClass)
    {
        if (string.IsNullOrEmpty(serverClass)) return null;
        int dash = serverClass.LastIndexOf('-');
        if (dash < 0 || dash == serverClass.Length - 1) return null;
        return RegionBySuffix.TryGetValue(serverClass[(dash + 1)..], out var r) ? r : null;
    }

    public static string RegionSuffix(string region)
    {
        foreach (var (suffix, name) in RegionBySuffix) if (name == region) return suffix;
        return region;
    }
}

/// <summary>An immutable view of one node and its tallies, as of one snapshot.</summary>
public sealed class NodeView
{
    public required string Name { get; init; }
    public required IReadOnlyDictionary<string, string> Labels { get; init; }
    public required IReadOnlyDictionary<string, string> Annotations { get; init; }
    public required long[] Allocatable { get; init; }
    public required long[] Capacity { get; init; }
    public required long[] Allocated { get; init; }
    public required long[] DaemonSetOverhead { get; init; }
    public required int Pods { get; init; }
    public required bool Ready { get; init; }
    public required bool Schedulable { get; init; }
    public required bool Deleting { get; init; }
    public required Taint[] Taints { get; init; }
    public DateTimeOffset? Created { get; init; }

    /// <summary>Requests of the counted pods per namespace, for cost attribution.</summary>
    public required IReadOnlyDictionary<string, long[]> NamespaceRequests { get; init; }

    public string ServerClass => Labels.TryGetValue(SpotLabels.ServerClass, out var v) ? v : "";
    public string Pool => Labels.TryGetValue(SpotLabels.Pool, out var v) ? v : "";
    public string CapacityType => Labels.TryGetValue(SpotLabels.CapacityType, out var v) ? v : "";

    /// <summary>The Spot region from the class name, else the topology label as the cloud provider set it.</summary>
    public string Region =>
        SpotLabels.RegionOfClass(ServerClass)
        ?? (Labels.TryGetValue(SpotLabels.TopologyRegion, out var v) ? v : "");

    public double Utilization(int resource) =>
        Allocatable[resource] <= 0 ? 0 : (double)Allocated[resource] / Allocatable[resource];
}

public enum NodeState { Ready, NotReady, Cordoned, Deleting }

/// <summary>Everything a scrape or a recommender run reads, consistent as of one moment.</summary>
public sealed class ClusterSnapshot
{
    public required ResourceTable Resources { get; init; }
    public required NodeView[] Nodes { get; init; }              // sorted by name
    public required long[] PendingRequests { get; init; }
    public required int PendingPods { get; init; }
    public required long Version { get; init; }

    public static NodeState StateOf(NodeView n) =>
        n.Deleting ? NodeState.Deleting : !n.Ready ? NodeState.NotReady : !n.Schedulable ? NodeState.Cordoned : NodeState.Ready;
}

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
        public NodeRecord? Record;                      // null while only pods name this node
        public long[] Allocated = new long[resourceCount];
        public long[] DaemonSetOverhead = new long[resourceCount];
        public int Pods;
        public readonly Dictionary<int, long[]> Namespaces = [];   // namespace id → requests of counted pods
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
            if (!n.Namespaces.TryGetValue(nsId, out var ns)) n.Namespaces[nsId] = ns = new long[r.Length];
            bool empty = true;
            for (int i = 0; i < r.Length; i++) { ns[i] += sign * r[i]; empty &= ns[i] == 0; }
            if (empty && sign < 0) n.Namespaces.Remove(nsId);
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
        foreach (var id in n.Namespaces.Keys)
        {
            ref var tally = ref CollectionsMarshal.GetValueRefOrNullRef(n.Namespaces, id);
            tally = (long[])tally.Clone();
        }
        n.TalliesShared = false;
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
            slot.Record = node;
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

    private NodeView BuildView(NodeSlot slot)
    {
        var r = slot.Record!;
        // The view takes the tallies as they are (no copies); the model copies them before its next change.
        slot.TalliesShared = true;
        var namespaceKeys = slot.Namespaces.Count == 0 ? [] : new string[slot.Namespaces.Count];
        var namespaceValues = slot.Namespaces.Count == 0 ? [] : new long[slot.Namespaces.Count][];
        int k = 0;
        foreach (var (id, tally) in slot.Namespaces)
        {
            namespaceKeys[k] = shapes.NamespaceName(id);
            namespaceValues[k++] = tally;
        }
        return new NodeView
        {
            Name = slot.Name,
            Labels = r.Labels,
            Annotations = r.Annotations,
            Allocatable = Fit(r.Allocatable),
            Capacity = Fit(r.Capacity),
            Allocated = slot.Allocated,
            DaemonSetOverhead = slot.DaemonSetOverhead,
            Pods = slot.Pods,
            Ready = r.Ready,
            Schedulable = !r.Unschedulable,
            Deleting = r.Deleting,
            Taints = r.Taints,
            Created = r.Created,
            NamespaceRequests = k == 0 ? SmallMap<long[]>.Empty : new SmallMap<long[]>(namespaceKeys, namespaceValues),
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

/// <summary>A small thread-safe store of whole records by key, with relist reconciliation.</summary>
public sealed class KeyedStore<T>(Func<T, string> keyOf) : IReflectorTarget<T> where T : class
{
    private readonly object gate = new();
    private readonly Dictionary<string, T> items = new(StringComparer.Ordinal);
    private HashSet<string>? seen;

    public long Version { get; private set; }

    public T[] All()
    {
        lock (gate) return items.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value).ToArray();
    }

    public void BeginRelist() { lock (gate) seen = new HashSet<string>(StringComparer.Ordinal); }

    public void Upsert(T item)
    {
        lock (gate)
        {
            var key = keyOf(item);
            seen?.Add(key);
            items[key] = item;
            Version++;
        }
    }

    public void Delete(T item)
    {
        lock (gate) { if (items.Remove(keyOf(item))) Version++; }
    }

    public int EndRelist()
    {
        lock (gate)
        {
            if (seen is null) return 0;
            var gone = items.Keys.Where(k => !seen.Contains(k)).ToList();
            foreach (var k in gone) items.Remove(k);
            seen = null;
            if (gone.Count > 0) Version++;
            return gone.Count;
        }
    }
}

/// <summary>One pod as the recommender sees it: where it is, what it requests, its shared shape.</summary>
public readonly record struct PodFacts(Guid Uid, string? Node, long[] Requests, PodShape Shape, long NameSuffix, bool Pending, bool Terminating)
{
    /// <summary>NameSuffix meaning "the node's name" (mirror pods are named after their node).</summary>
    public const long NodeNameSuffix = -1;

    public string Name => NameSuffix > 0 ? Shape.NamePrefix + Scheduling.UnpackSuffix(NameSuffix)
        : NameSuffix == NodeNameSuffix ? Shape.NamePrefix + Node
        : Shape.NamePrefix;
    public string Namespace => Shape.Namespace;
    public bool IsOverhead => Shape.Owner is OwnerKind.DaemonSet or OwnerKind.Mirror;
}

/// <summary>
/// Interned pod shapes, keyed by the raw bytes that define them (namespace, owner, name prefix,
/// traits, labels, node selector, affinity, tolerations) and parsed once per distinct shape. The
/// parts many shapes have in common (namespace, node selector, affinity, tolerations) are shared
/// between shapes too, each parsed once per distinct JSON.
/// </summary>
internal sealed class ShapeTable
{
    private struct Entry
    {
        public ShapeKey Key;
        public PodShape Shape;
        public int Count;
        public int Namespace;        // id in namespaces
        public byte[]? Selector, Affinity, Tolerations;   // keys of the shared parts, to release them
    }

    private readonly Dictionary<ShapeKey, int> ids = [];
    private readonly List<Entry> entries = [];
    private readonly Stack<int> free = new();
    private readonly InternTable<string> namespaces = new();
    private readonly SharedParts<IReadOnlyDictionary<string, string>> selectors = new();
    private readonly SharedParts<PodShape.AffinityRules> affinities = new();
    private readonly SharedParts<IReadOnlyList<Toleration>> tolerations = new();

    public int Count => ids.Count;

    public PodShape this[int id] => entries[id].Shape;

    /// <summary>The namespace id of a shape: what per-node namespace tallies are keyed by.</summary>
    public int NamespaceOf(int id) => entries[id].Namespace;

    public string NamespaceName(int namespaceId) => namespaces[namespaceId];

    public int Add(PodRecord pod, string prefix, bool overhead)
    {
        var key = ShapeKey.Of(pod, prefix, overhead);
        if (ids.TryGetValue(key, out var id))
        {
            CollectionsMarshal.AsSpan(entries)[id].Count++;
            return id;
        }
        int ns = namespaces.Add(pod.Namespace);
        var e = new Entry { Key = key, Count = 1, Namespace = ns };
        var canonicalNamespace = namespaces[ns];
        try
        {
            // DaemonSet and mirror pods are never moved or provisioned for: their placement rules
            // (a DaemonSet pod's affinity names its node) would only make every one a shape of its own.
            var a = overhead ? PodShape.AffinityRules.None : affinities.Acquire(pod.AffinityJson, PodShape.ParseAffinity, out e.Affinity);
            var t = overhead ? [] : tolerations.Acquire(pod.TolerationsJson, PodShape.ParseTolerations, out e.Tolerations);
            var s = overhead ? SmallMap<string>.Empty : selectors.Acquire(pod.NodeSelectorJson, Scheduling.StringMap, out e.Selector);
            e.Shape = new PodShape
            {
                Namespace = canonicalNamespace, Owner = pod.Owner, OwnerName = pod.OwnerName, NamePrefix = prefix, Traits = pod.Traits,
                Priority = pod.Priority, Labels = overhead ? SmallMap<string>.Empty : Scheduling.StringMap(pod.LabelsJson), NodeSelector = s,
                RequiredNodeTerms = a.RequiredNodeTerms, Tolerations = t, AntiAffinity = a.AntiAffinity,
            };
        }
        catch (System.Text.Json.JsonException)
        {
            ReleaseParts(e);
            e.Selector = e.Affinity = e.Tolerations = null;
            // The decoder already checked the JSON is well formed; a shape we cannot read places nowhere.
            e.Shape = new PodShape
            {
                Namespace = canonicalNamespace, Owner = pod.Owner, OwnerName = pod.OwnerName, NamePrefix = prefix, Traits = pod.Traits,
                Priority = pod.Priority, Labels = SmallMap<string>.Empty, NodeSelector = SmallMap<string>.Empty,
                RequiredNodeTerms = [[new NodeSelectorRequirement("", "In", [])]], Tolerations = [], AntiAffinity = [],
            };
        }
        if (free.TryPop(out id)) entries[id] = e;
        else { id = entries.Count; entries.Add(e); }
        ids[key] = id;
        return id;
    }

    public void Release(int id)
    {
        ref var e = ref CollectionsMarshal.AsSpan(entries)[id];
        if (--e.Count > 0) return;
        ids.Remove(e.Key);
        namespaces.Release(e.Namespace);
        ReleaseParts(e);
        e = new Entry { Shape = PodShape.Empty };
        free.Push(id);
    }

    private void ReleaseParts(in Entry e)
    {
        if (e.Selector is not null) selectors.Release(e.Selector);
        if (e.Affinity is not null) affinities.Release(e.Affinity);
        if (e.Tolerations is not null) tolerations.Release(e.Tolerations);
    }

    /// <summary>
    /// A 128-bit digest of what defines a shape: the raw JSON is not kept per shape. XxHash128 with a
    /// seed drawn per process: accidental collisions are out of reach at 128 bits, and nobody who can
    /// create pods can search for a colliding shape without the seed. (SHA-256 cost a tenth of the
    /// reflector's time while draining a watch backlog, most of it in OpenSSL's per-call set-up.)
    /// </summary>
    private readonly record struct ShapeKey(long A, long B)
    {
        private static readonly long Seed = BitConverter.ToInt64(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));

        public static ShapeKey Of(PodRecord p, string prefix, bool overhead)
        {
            var utf8 = System.Text.Encoding.UTF8;
            ReadOnlySpan<byte> labels = overhead ? [] : p.LabelsJson, selector = overhead ? [] : p.NodeSelectorJson;
            ReadOnlySpan<byte> affinity = overhead ? [] : p.AffinityJson, tolerations = overhead ? [] : p.TolerationsJson;
            int size = 64 + utf8.GetMaxByteCount(p.Namespace.Length + (p.OwnerName?.Length ?? 0) + prefix.Length)
                + labels.Length + selector.Length + affinity.Length + tolerations.Length;
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(size);
            try
            {
                int at = 0;
                void Part(ReadOnlySpan<byte> b)
                {
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(at), b.Length);
                    at += 4;
                    b.CopyTo(buffer.AsSpan(at));
                    at += b.Length;
                }
                void Text(string t)
                {
                    int n = utf8.GetBytes(t, buffer.AsSpan(at + 4));
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(at), n);
                    at += 4 + n;
                }
                Text(p.Namespace);
                Part([(byte)p.Owner, (byte)p.Traits, overhead ? (byte)1 : (byte)0]);
                Part(BitConverter.GetBytes(p.Priority));
                Text(p.OwnerName ?? "");
                Text(prefix);
                Part(labels);
                Part(selector);
                Part(affinity);
                Part(tolerations);
                var digest = System.IO.Hashing.XxHash128.HashToUInt128(buffer.AsSpan(0, at), Seed);
                return new ShapeKey((long)(ulong)(digest >> 64), (long)(ulong)digest);
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}

/// <summary>A reference-counted intern table handing out small integer ids.</summary>
public sealed class InternTable<T> where T : IEquatable<T>
{
    private readonly Dictionary<T, int> ids = [];
    private readonly List<(T Value, int Count)> entries = [];
    private readonly Stack<int> free = new();

    public int Count => ids.Count;

    public T this[int id] => entries[id].Value;

    public int Add(T value)
    {
        if (ids.TryGetValue(value, out var id))
        {
            var e = entries[id];
            entries[id] = (e.Value, e.Count + 1);
            return id;
        }
        if (free.TryPop(out id)) entries[id] = (value, 1);
        else { id = entries.Count; entries.Add((value, 1)); }
        ids[value] = id;
        return id;
    }

    public void Release(int id)
    {
        var e = entries[id];
        if (e.Count > 1) { entries[id] = (e.Value, e.Count - 1); return; }
        ids.Remove(e.Value);
        entries[id] = (default!, 0);
        free.Push(id);
    }
}

/// <summary>
/// A map from uid to a small struct at 16 bytes plus the value per entry: entries sit densely in pages
/// (no per-entry hash code, link or free-list slack as in Dictionary), found through an open-addressed
/// index of entry positions (linear probing, backward-shift deletion, no tombstones). Removing an entry
/// moves the last one into its place, so positions are dense and change on removal.
/// </summary>
public sealed class UidTable<T> where T : struct
{
    private struct Entry
    {
        public Guid Key;
        public T Value;
    }

    // 1,024 entries a page keeps each page under the large-object threshold for values up to 64 bytes.
    private const int PageBits = 10, PageSize = 1 << PageBits, PageMask = PageSize - 1;
    private const int MinIndex = 16;

    private Entry[][] pages = [];
    private int[] index = new int[MinIndex];   // entry position + 1; 0 = empty
    private int shift = 64 - 4;                // 64 - log2(index.Length)
    private int count;

    public int Count => count;

    /// <summary>The key at a position in [0, Count).</summary>
    public Guid KeyAt(int position) => At(position).Key;

    /// <summary>The value at a position in [0, Count), by reference for in-place updates.</summary>
    public ref T ValueAt(int position) => ref At(position).Value;

    public bool TryGetValue(Guid key, out T value)
    {
        int slot = Find(key);
        if (slot < 0) { value = default; return false; }
        value = At(index[slot] - 1).Value;
        return true;
    }

    public bool ContainsKey(Guid key) => Find(key) >= 0;

    /// <summary>Inserts or replaces; true when the key was new.</summary>
    public bool Set(Guid key, T value)
    {
        int mask = index.Length - 1;
        for (int s = Home(key); ; s = (s + 1) & mask)
        {
            int at = index[s];
            if (at == 0) break;
            ref var e = ref At(at - 1);
            if (e.Key == key) { e.Value = value; return false; }
        }
        if ((long)(count + 1) * 4 > (long)index.Length * 3) Rehash(index.Length * 2);
        int position = count;
        if ((position >> PageBits) >= pages.Length || pages[position >> PageBits] is null) AddPage(position >> PageBits);
        ref var slotEntry = ref At(position);
        slotEntry.Key = key;
        slotEntry.Value = value;
        count++;
        Place(key, position + 1);
        return true;
    }

    public bool Remove(Guid key, out T value)
    {
        int slot = Find(key);
        if (slot < 0) { value = default; return false; }
        int position = index[slot] - 1;
        value = At(position).Value;
        RemoveSlot(slot, position);
        return true;
    }

    /// <summary>Removes the entry at a position; the last entry moves into it (walk positions downward to remove while scanning).</summary>
    public void RemoveAt(int position)
    {
        if ((uint)position >= (uint)count) throw new ArgumentOutOfRangeException(nameof(position));
        RemoveSlot(Find(At(position).Key), position);
    }

    public void Clear()
    {
        pages = [];
        index = new int[MinIndex];
        shift = 64 - 4;
        count = 0;
    }

    private void RemoveSlot(int slot, int position)
    {
        Unplace(slot);
        int last = count - 1;
        if (position != last)
        {
            ref var moved = ref At(last);
            index[Find(moved.Key)] = position + 1;
            At(position) = moved;
        }
        At(last) = default;
        count--;
        // Give back pages beyond the one that holds the last entry and one spare.
        int keep = count == 0 ? 1 : ((count - 1) >> PageBits) + 2;
        for (int page = keep; page < pages.Length && pages[page] is not null; page++) pages[page] = null!;
    }

    private ref Entry At(int position) => ref pages[position >> PageBits][position & PageMask];

    private void AddPage(int page)
    {
        if (page >= pages.Length) Array.Resize(ref pages, Math.Max(4, pages.Length * 2));
        pages[page] = new Entry[PageSize];
    }

    private int Home(Guid key)
    {
        var bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<Guid>(in key));
        ulong a = MemoryMarshal.Read<ulong>(bytes), b = MemoryMarshal.Read<ulong>(bytes[8..]);
        // Fibonacci hashing of both halves: uids are random, but a test's or a simulator's need not be.
        return (int)(((a ^ System.Numerics.BitOperations.RotateLeft(b, 31)) * 0x9E3779B97F4A7C15UL) >> shift);
    }

    private int Find(Guid key)
    {
        int mask = index.Length - 1;
        for (int s = Home(key); ; s = (s + 1) & mask)
        {
            int at = index[s];
            if (at == 0) return -1;
            if (At(at - 1).Key == key) return s;
        }
    }

    private void Place(Guid key, int entry)
    {
        int mask = index.Length - 1;
        int s = Home(key);
        while (index[s] != 0) s = (s + 1) & mask;
        index[s] = entry;
    }

    private void Unplace(int hole)
    {
        int mask = index.Length - 1;
        index[hole] = 0;
        for (int j = (hole + 1) & mask; index[j] != 0; j = (j + 1) & mask)
        {
            int home = Home(At(index[j] - 1).Key);
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            if (((j - home) & mask) >= ((j - hole) & mask))
            {
                index[hole] = index[j];
                index[j] = 0;
                hole = j;
            }
        }
    }

    private void Rehash(int size)
    {
        index = new int[size];
        shift = 64 - System.Numerics.BitOperations.Log2((uint)size);
        for (int p = 0; p < count; p++) Place(At(p).Key, p + 1);
    }
}

/// <summary>
/// Reference-counted values parsed from JSON, shared by everything whose JSON is byte-for-byte equal:
/// the thousands of pod shapes that carry the same default tolerations hold one parsed list.
/// </summary>
internal sealed class SharedParts<T> where T : class
{
    private sealed class Part(byte[] key, T value)
    {
        public readonly byte[] Key = key;
        public readonly T Value = value;
        public int Count = 1;
    }

    private readonly Dictionary<byte[], Part> parts = new(ContentComparer.Instance);

    public int Count => parts.Count;

    /// <summary>
    /// The shared value for this JSON, parsed on first sight. <paramref name="key"/> is what to release
    /// it with; null for empty JSON, whose value is not counted (parse it to a shared empty value).
    /// </summary>
    public T Acquire(byte[] json, Func<ReadOnlySpan<byte>, T> parse, out byte[]? key)
    {
        if (json.Length == 0) { key = null; return parse(json); }
        if (parts.TryGetValue(json, out var part)) part.Count++;
        else
        {
            // Parse before storing: JSON that fails to parse leaves nothing behind. The key is a copy,
            // so the caller's buffer is never retained.
            part = new Part(json.AsSpan().ToArray(), parse(json));
            parts.Add(part.Key, part);
        }
        key = part.Key;
        return part.Value;
    }

    public void Release(byte[] key)
    {
        var part = parts[key];
        if (--part.Count == 0) parts.Remove(key);
    }

    private sealed class ContentComparer : IEqualityComparer<byte[]>
    {
        public static readonly ContentComparer Instance = new();

        public bool Equals(byte[]? a, byte[]? b) => ReferenceEquals(a, b) || (a is not null && b is not null && a.AsSpan().SequenceEqual(b));

        public int GetHashCode(byte[] b)
        {
            var h = new HashCode();
            h.AddBytes(b);
            return h.ToHashCode();
        }
    }
}
