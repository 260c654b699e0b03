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

    /// <summary>The resource with the highest allocated share: what limits further packing on this node.</summary>
    public int MostAllocated(int[] candidates)
    {
        int best = candidates[0];
        double bestRatio = -1;
        foreach (var r in candidates)
        {
            if (Allocatable[r] <= 0) continue;
            var ratio = Utilization(r);
            if (ratio > bestRatio) { bestRatio = ratio; best = r; }
        }
        return best;
    }
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

    private readonly Dictionary<Guid, PodSlot> pods = [];
    private readonly InternTable<RequestVector> requestVectors = new();
    private readonly InternTable<string> namespaces = new();
    private readonly ShapeTable shapes = new();

    private readonly long[] pendingRequests;
    private int pendingPods;

    private HashSet<Guid>? podsSeenInRelist;
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
        public readonly long[] Allocated = new long[resourceCount];
        public readonly long[] DaemonSetOverhead = new long[resourceCount];
        public int Pods;
        public readonly Dictionary<int, long[]> Namespaces = [];   // namespace id → requests of counted pods
        public int References;                          // pods that name this node, plus one for the node object
        public NodeView? View;
        public int ViewIndex;                           // position in the sorted views array
    }

    [StructLayout(LayoutKind.Auto)]
    private struct PodSlot
    {
        public long NameSuffix;   // packed generated-name suffix; 0 when the shape's prefix is the whole name
        public int Node;          // -1 when not bound
        public int Requests;      // id in requestVectors
        public int Namespace;     // id in namespaces
        public int Shape;         // id in shapes
        public PodFlags Flags;
    }

    [Flags]
    private enum PodFlags : byte
    {
        None = 0,
        Counted = 1,          // bound and not terminal: holds its reservation on Node
        Overhead = 2,         // DaemonSet or mirror pod
        Pending = 4,          // unschedulable demand
        Terminating = 8,
    }

    // ---- pods ----------------------------------------------------------------------------

    public void UpsertPod(PodRecord pod)
    {
        lock (gate)
        {
            podsSeenInRelist?.Add(pod.Uid);
            if (pods.TryGetValue(pod.Uid, out var old)) Remove(old);
            var slot = Add(pod);
            pods[pod.Uid] = slot;
            version++;
        }
    }

    public void DeletePod(Guid uid)
    {
        lock (gate)
        {
            if (pods.Remove(uid, out var old))
            {
                Remove(old);
                version++;
            }
        }
    }

    /// <summary>Starts a relist: pods not upserted before <see cref="EndPodRelist"/> are deleted.</summary>
    public void BeginPodRelist()
    {
        lock (gate) podsSeenInRelist = [];
    }

    public int EndPodRelist()
    {
        lock (gate)
        {
            var seen = podsSeenInRelist;
            podsSeenInRelist = null;
            if (seen is null) return 0;
            var gone = new List<Guid>();
            foreach (var uid in pods.Keys) if (!seen.Contains(uid)) gone.Add(uid);
            foreach (var uid in gone)
            {
                pods.Remove(uid, out var old);
                Remove(old);
            }
            if (gone.Count > 0) version++;
            return gone.Count;
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
        var slot = new PodSlot
        {
            Node = node, Requests = requests, Namespace = namespaces.Add(pod.Namespace), Flags = flags,
            Shape = shapes.Add(pod, prefix, overhead), NameSuffix = suffix,
        };
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

    private void Remove(PodSlot slot)
    {
        Account(slot, -1);
        requestVectors.Release(slot.Requests);
        namespaces.Release(slot.Namespace);
        shapes.Release(slot.Shape);
        if (slot.Node >= 0) ReleaseNodeReference(slot.Node);
    }

    private void Account(PodSlot slot, int sign)
    {
        var r = requestVectors[slot.Requests].Values;
        if ((slot.Flags & PodFlags.Counted) != 0)
        {
            var n = nodes[slot.Node];
            for (int i = 0; i < r.Length; i++) n.Allocated[i] += sign * r[i];
            if ((slot.Flags & PodFlags.Overhead) != 0)
                for (int i = 0; i < r.Length; i++) n.DaemonSetOverhead[i] += sign * r[i];
            n.Pods += sign;
            if (!n.Namespaces.TryGetValue(slot.Namespace, out var ns)) n.Namespaces[slot.Namespace] = ns = new long[r.Length];
            bool empty = true;
            for (int i = 0; i < r.Length; i++) { ns[i] += sign * r[i]; empty &= ns[i] == 0; }
            if (empty && sign < 0) n.Namespaces.Remove(slot.Namespace);
            MarkDirty(slot.Node);
        }
        if ((slot.Flags & PodFlags.Pending) != 0)
        {
            for (int i = 0; i < r.Length; i++) pendingRequests[i] += sign * r[i];
            pendingPods += sign;
            pendingVersion++;
        }
    }

    /// <summary>
    /// Every pod the recommender reasons about (counted on a node, or pending unschedulable), as a
    /// copy taken under the lock: O(pods), for the recommender's timer, never for a scrape.
    /// </summary>
    public PodFacts[] Pods()
    {
        lock (gate)
        {
            var list = new List<PodFacts>(pods.Count);
            foreach (var (uid, slot) in pods)
            {
                if ((slot.Flags & (PodFlags.Counted | PodFlags.Pending)) == 0) continue;
                list.Add(new PodFacts(uid, slot.Node >= 0 ? nodes[slot.Node].Name : null, requestVectors[slot.Requests].Values,
                    shapes[slot.Shape], slot.NameSuffix, (slot.Flags & PodFlags.Pending) != 0, (slot.Flags & PodFlags.Terminating) != 0));
            }
            // Deterministic order without building names: node, namespace, name prefix, packed suffix, uid.
            list.Sort(static (a, b) =>
            {
                int c = string.CompareOrdinal(a.Node, b.Node);
                if (c == 0) c = string.CompareOrdinal(a.Shape.Namespace, b.Shape.Namespace);
                if (c == 0) c = string.CompareOrdinal(a.Shape.NamePrefix, b.Shape.NamePrefix);
                if (c == 0) c = a.NameSuffix.CompareTo(b.NameSuffix);
                return c != 0 ? c : a.Uid.CompareTo(b.Uid);
            });
            return list.ToArray();
        }
    }

    /// <summary>The pods bound to one node, terminating ones included: what a drain waits for. A scan that copies nothing else.</summary>
    public PodFacts[] PodsOn(string node)
    {
        lock (gate)
        {
            if (!nodeIds.TryGetValue(node, out var id)) return [];
            var list = new List<PodFacts>();
            foreach (var (uid, slot) in pods)
            {
                if (slot.Node != id) continue;
                list.Add(new PodFacts(uid, node, requestVectors[slot.Requests].Values, shapes[slot.Shape], slot.NameSuffix,
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
            snapshot = new ClusterSnapshot
            {
                Resources = resources,
                Nodes = views,
                PendingRequests = (long[])pendingRequests.Clone(),
                PendingPods = pendingPods,
                Version = version,
            };
            return snapshot;
        }
    }

    private NodeView BuildView(NodeSlot slot)
    {
        var r = slot.Record!;
        return new NodeView
        {
            Name = slot.Name,
            Labels = r.Labels,
            Annotations = r.Annotations,
            Allocatable = Fit(r.Allocatable),
            Capacity = Fit(r.Capacity),
            Allocated = (long[])slot.Allocated.Clone(),
            DaemonSetOverhead = (long[])slot.DaemonSetOverhead.Clone(),
            Pods = slot.Pods,
            Ready = r.Ready,
            Schedulable = !r.Unschedulable,
            Deleting = r.Deleting,
            Taints = r.Taints,
            Created = r.Created,
            NamespaceRequests = slot.Namespaces.ToDictionary(kv => namespaces[kv.Key], kv => (long[])kv.Value.Clone(), StringComparer.Ordinal),
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
/// traits, labels, node selector, affinity, tolerations) and parsed once per distinct shape.
/// </summary>
internal sealed class ShapeTable
{
    private readonly Dictionary<ShapeKey, int> ids = [];
    private readonly List<(ShapeKey Key, PodShape Shape, int Count)> entries = [];
    private readonly Stack<int> free = new();

    public int Count => ids.Count;

    public PodShape this[int id] => entries[id].Shape;

    public int Add(PodRecord pod, string prefix, bool overhead)
    {
        var key = ShapeKey.Of(pod, prefix, overhead);
        if (ids.TryGetValue(key, out var id))
        {
            var e = entries[id];
            entries[id] = (e.Key, e.Shape, e.Count + 1);
            return id;
        }
        PodShape shape;
        try
        {
            // DaemonSet and mirror pods are never moved or provisioned for: their placement rules
            // (a DaemonSet pod's affinity names its node) would only make every one a shape of its own.
            shape = overhead
                ? PodShape.Parse(pod.Namespace, pod.Owner, pod.OwnerName, prefix, pod.Traits, pod.Priority, [], [], [], [])
                : PodShape.Parse(pod.Namespace, pod.Owner, pod.OwnerName, prefix, pod.Traits, pod.Priority,
                    pod.LabelsJson, pod.NodeSelectorJson, pod.AffinityJson, pod.TolerationsJson);
        }
        catch (System.Text.Json.JsonException)
        {
            // The decoder already checked the JSON is well formed; a shape we cannot read places nowhere.
            shape = new PodShape
            {
                Namespace = pod.Namespace, Owner = pod.Owner, OwnerName = pod.OwnerName, NamePrefix = prefix, Traits = pod.Traits,
                Priority = pod.Priority, Labels = new Dictionary<string, string>(), NodeSelector = new Dictionary<string, string>(),
                RequiredNodeTerms = [[new NodeSelectorRequirement("", "In", [])]], Tolerations = [], AntiAffinity = [],
            };
        }
        if (free.TryPop(out id)) entries[id] = (key, shape, 1);
        else { id = entries.Count; entries.Add((key, shape, 1)); }
        ids[key] = id;
        return id;
    }

    public void Release(int id)
    {
        var e = entries[id];
        if (e.Count > 1) { entries[id] = (e.Key, e.Shape, e.Count - 1); return; }
        ids.Remove(e.Key);
        entries[id] = (default, PodShape.Empty, 0);
        free.Push(id);
    }

    /// <summary>A 128-bit digest of what defines a shape: the raw JSON is not kept per shape.</summary>
    private readonly record struct ShapeKey(long A, long B)
    {
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
                Span<byte> digest = stackalloc byte[32];
                System.Security.Cryptography.SHA256.HashData(buffer.AsSpan(0, at), digest);
                return new ShapeKey(BitConverter.ToInt64(digest), BitConverter.ToInt64(digest[8..]));
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
