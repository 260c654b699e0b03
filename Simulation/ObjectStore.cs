using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Karpetrack.Simulation;

/// <summary>One API resource the fake server knows: enough to route, discover and select it.</summary>
public sealed record ResourceType(
    string Group,
    string Version,
    string Resource,
    string Kind,
    bool Namespaced,
    IReadOnlyList<string> ShortNames,
    IReadOnlyList<string> SelectableFields)
{
    public string GroupVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";
    public string SingularName => Kind.ToLowerInvariant();

    // Every resource supports these two; the real apiserver adds them to each type's own list.
    private static readonly string[] MetadataFields = ["metadata.name", "metadata.namespace"];

    public static readonly ResourceType Nodes = new("", "v1", "nodes", "Node", false, ["no"],
        [.. MetadataFields, "spec.unschedulable"]);

    public static readonly ResourceType Pods = new("", "v1", "pods", "Pod", true, ["po"],
        [.. MetadataFields, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
         "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"]);

    public static readonly ResourceType Namespaces = new("", "v1", "namespaces", "Namespace", false, ["ns"],
        [.. MetadataFields, "status.phase"]);

    public static readonly ResourceType Events = new("", "v1", "events", "Event", true, ["ev"],
        [.. MetadataFields, "involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "reason", "type"]);

    public static readonly ResourceType DaemonSets = new("apps", "v1", "daemonsets", "DaemonSet", true, ["ds"], MetadataFields);

    public static readonly ResourceType PodDisruptionBudgets = new("policy", "v1", "poddisruptionbudgets",
        "PodDisruptionBudget", true, ["pdb"], MetadataFields);

    public static readonly ResourceType Leases = new("coordination.k8s.io", "v1", "leases", "Lease", true, [], MetadataFields);

    /// <summary>What a plain server starts with; the others can be registered when a test needs them.</summary>
    public static IReadOnlyList<ResourceType> Defaults { get; } = [Nodes, Pods];
}

/// <summary>
/// An object as stored: its serialized bytes (what LIST and WATCH write verbatim) plus the few
/// facts selectors need, extracted once at write time so that requests never parse JSON.
/// </summary>
public sealed class StoredObject
{
    internal StoredObject(ResourceType type, string? ns, string name, long resourceVersion, byte[] utf8,
        IReadOnlyDictionary<string, string> labels, IReadOnlyDictionary<string, string> fields)
    {
        Type = type;
        Namespace = ns;
        Name = name;
        ResourceVersion = resourceVersion;
        Utf8 = utf8;
        Labels = labels;
        Fields = fields;
    }

    public ResourceType Type { get; }
    public string? Namespace { get; }
    public string Name { get; }
    public long ResourceVersion { get; }
    public ReadOnlyMemory<byte> Json => Utf8;
    public IReadOnlyDictionary<string, string> Labels { get; }
    public IReadOnlyDictionary<string, string> Fields { get; }
    internal byte[] Utf8 { get; }
    internal string Key => ObjectStore.KeyOf(Namespace, Name);

    /// <summary>A fresh mutable copy; the stored bytes stay the source of truth.</summary>
    public JsonObject ToJsonObject() => JsonNode.Parse(Utf8)!.AsObject();
}

public enum WatchEventType { Added, Modified, Deleted }

/// <summary>A change as kept in the per-resource history. Previous is the state before it (null for ADDED).</summary>
public sealed class StoredEvent
{
    internal StoredEvent(WatchEventType type, StoredObject obj, StoredObject? previous)
    {
        Type = type;
        Object = obj;
        Previous = previous;
    }

    public WatchEventType Type { get; }
    public StoredObject Object { get; }
    public StoredObject? Previous { get; }
    public long ResourceVersion => Object.ResourceVersion;

    private byte[]? _previousAtThisVersion;

    /// <summary>
    /// The previous state stamped with this event's resourceVersion: what a real apiserver sends as
    /// DELETED to a watcher whose selector the object stopped matching. Built only when needed.
    /// </summary>
    internal byte[] PreviousAtThisVersion()
    {
        var cached = Volatile.Read(ref _previousAtThisVersion);
        if (cached is not null) return cached;
        var node = JsonNode.Parse(Previous!.Utf8)!.AsObject();
        node["metadata"]!.AsObject()["resourceVersion"] = ResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture);
        cached = JsonWire.Utf8(node);
        Volatile.Write(ref _previousAtThisVersion, cached);
        return cached;
    }
}

/// <summary>What flows through a watcher's channel: a stored change, a bookmark, or an injected raw line.</summary>
internal abstract record WatchItem;
internal sealed record ChangeItem(StoredEvent Event) : WatchItem;
internal sealed record BookmarkItem(long ResourceVersion) : WatchItem;
internal sealed record RawItem(byte[] Line) : WatchItem;

/// <summary>One open watch as the store sees it: a bounded queue the request loop drains.</summary>
internal sealed class Watcher
{
    private readonly Channel<WatchItem> _channel;
    private readonly CancellationTokenSource _abort = new();

    public Watcher(ResourceType type, int capacity)
    {
        Type = type;
        _channel = Channel.CreateBounded<WatchItem>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails instead of dropping silently
        });
    }

    public ResourceType Type { get; }
    public ChannelReader<WatchItem> Reader => _channel.Reader;

    /// <summary>Cancelled when the stream must end abruptly (fault injection, restart).</summary>
    public CancellationToken Aborted => _abort.Token;

    /// <summary>True when the watcher was closed because it fell behind; the stream then just ends.</summary>
    public bool Overflowed { get; private set; }

    public void Offer(WatchItem item)
    {
        if (_channel.Writer.TryWrite(item)) return;
        // Like the apiserver's cacher: a consumer that cannot keep up is dropped rather than
        // allowed to stall every writer; the client re-watches from its last resourceVersion.
        Overflowed = true;
        _channel.Writer.TryComplete();
    }

    public void CompleteCleanly() => _channel.Writer.TryComplete();

    public void Abort()
    {
        _channel.Writer.TryComplete();
        try { _abort.Cancel(); } catch (ObjectDisposedException) { }
    }
}

/// <summary>Thrown for a watch start the store cannot serve; the server turns it into ERROR 410.</summary>
internal sealed class ResourceVersionTooOldException(long requested, long oldest) : Exception(
    $"too old resource version: {requested} ({oldest})")
{
    public long Requested { get; } = requested;
    public long Oldest { get; } = oldest;
}

/// <summary>
/// Thread-safe object store with one global resourceVersion counter, like etcd behind an apiserver.
/// Every write is serialized once; reads hand out the stored bytes. Watch fan-out happens under the
/// write lock so that every watcher sees events in resourceVersion order without gaps.
/// </summary>
public sealed class ObjectStore
{
    private readonly object _lock = new();
    private readonly Dictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly int _historyLimit;
    private readonly int _watcherCapacity;
    private long _resourceVersion;
    private TaskCompletionSource _delivery = Open();
    /// <summary>Stamps the creationTimestamp of an object stored without one (the API server's clock).</summary>
    private readonly TimeProvider _clock;

    public ObjectStore(int watchHistoryLimit = 20_000, int watcherCapacity = 100_000, long initialResourceVersion = 1, TimeProvider? clock = null)
    {
        _clock = clock ?? TimeProvider.System;
        if (watchHistoryLimit < 1) throw new ArgumentOutOfRangeException(nameof(watchHistoryLimit));
        _historyLimit = watchHistoryLimit;
        _watcherCapacity = watcherCapacity;
        _resourceVersion = initialResourceVersion;
        foreach (var t in ResourceType.Defaults) Register(t);
    }

    private sealed class Bucket(ResourceType type)
    {
        public ResourceType Type { get; } = type;
        public Dictionary<string, StoredObject> Objects { get; } = new(StringComparer.Ordinal);
        public Queue<StoredEvent> History { get; } = new();
        // Every event with a resourceVersion above this is still in History.
        public long CompactedThrough { get; set; }
        public List<Watcher> Watchers { get; } = [];
        public StoredObject[]? SortedCache { get; set; }
    }

    public long CurrentResourceVersion { get { lock (_lock) return _resourceVersion; } }

    public IReadOnlyList<ResourceType> Resources
    {
        get { lock (_lock) return [.. _buckets.Values.Select(b => b.Type)]; }
    }

    public void Register(ResourceType type)
    {
        lock (_lock)
        {
            if (_buckets.ContainsKey(type.Resource)) return;
            _buckets[type.Resource] = new Bucket(type) { CompactedThrough = _resourceVersion };
        }
    }

    public ResourceType? Find(string group, string version, string resource)
    {
        lock (_lock)
        {
            return _buckets.TryGetValue(resource, out var b) && b.Type.Group == group && b.Type.Version == version
                ? b.Type : null;
        }
    }

    internal static string KeyOf(string? ns, string name) => ns is null ? name : ns + "/" + name;

    /// <summary>
    /// Creates or replaces an object. Stamps metadata.resourceVersion (and uid and creationTimestamp
    /// when missing) on the given object, as a create response would, then keeps only its bytes.
    /// </summary>
    public StoredObject Upsert(string resource, JsonObject obj)
    {
        var metadata = obj["metadata"] as JsonObject ?? throw new ArgumentException("object has no metadata", nameof(obj));
        var name = (string?)metadata["name"] ?? throw new ArgumentException("object has no metadata.name", nameof(obj));
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            var ns = bucket.Type.Namespaced
                ? (string?)metadata["namespace"] ?? throw new ArgumentException("namespaced object has no metadata.namespace", nameof(obj))
                : null;
            var key = KeyOf(ns, name);
            bucket.Objects.TryGetValue(key, out var previous);

            var rv = ++_resourceVersion;
            metadata["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (metadata["uid"] is null) metadata["uid"] = Guid.NewGuid().ToString();
            if (metadata["creationTimestamp"] is null) metadata["creationTimestamp"] = KubeTime.Format(_clock.GetUtcNow());

            var stored = Materialize(bucket.Type, ns, name, rv, obj);
            bucket.Objects[key] = stored;
            bucket.SortedCache = null;
            Publish(bucket, new StoredEvent(previous is null ? WatchEventType.Added : WatchEventType.Modified, stored, previous));
            return stored;
        }
    }

    /// <summary>Creates an object only when none of that name exists; null when one does (AlreadyExists).</summary>
    public StoredObject? TryCreate(string resource, JsonObject obj)
    {
        var metadata = obj["metadata"] as JsonObject ?? throw new ArgumentException("object has no metadata", nameof(obj));
        var name = (string?)metadata["name"] ?? throw new ArgumentException("object has no metadata.name", nameof(obj));
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            if (bucket.Objects.ContainsKey(KeyOf(bucket.Type.Namespaced ? (string?)metadata["namespace"] : null, name))) return null;
            return Upsert(resource, obj);
        }
    }

    /// <summary>
    /// Read-modify-write under the write lock, so that a precondition checked by <paramref name="change"/>
    /// still holds when the result is stored. <paramref name="change"/> gets a fresh copy and returns
    /// false to leave the object alone; it may throw to refuse. Null when the object does not exist.
    /// </summary>
    public StoredObject? Update(string resource, string? ns, string name, Func<JsonObject, bool> change)
    {
        lock (_lock)
        {
            var current = Get(resource, ns, name);
            if (current is null) return null;
            var copy = current.ToJsonObject();
            return change(copy) ? Upsert(resource, copy) : current;
        }
    }

    /// <summary>Deletes only while the stored object still has this uid (a graceful deletion finishing, not a namesake).</summary>
    public bool DeleteIfUid(string resource, string? ns, string name, string uid)
    {
        lock (_lock)
        {
            var current = Get(resource, ns, name);
            if (current is null || (string?)current.ToJsonObject()["metadata"]?["uid"] != uid) return false;
            return Delete(resource, ns, name);
        }
    }

    /// <summary>Removes an object; watchers get DELETED with its last state at a new resourceVersion.</summary>
    public bool Delete(string resource, string? ns, string name)
    {
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            var key = KeyOf(bucket.Type.Namespaced ? ns : null, name);
            if (!bucket.Objects.Remove(key, out var previous)) return false;
            var rv = ++_resourceVersion;
            var last = previous.ToJsonObject();
            last["metadata"]!.AsObject()["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var tombstone = Materialize(bucket.Type, previous.Namespace, name, rv, last);
            bucket.SortedCache = null;
            Publish(bucket, new StoredEvent(WatchEventType.Deleted, tombstone, previous));
            return true;
        }
    }

    public StoredObject? Get(string resource, string? ns, string name)
    {
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            return bucket.Objects.GetValueOrDefault(KeyOf(bucket.Type.Namespaced ? ns : null, name));
        }
    }

    /// <summary>All objects of a resource sorted by namespace/name, plus the resourceVersion they are consistent with.</summary>
    public (IReadOnlyList<StoredObject> Items, long ResourceVersion) List(string resource)
    {
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            bucket.SortedCache ??= bucket.Objects.Values.OrderBy(o => o.Key, StringComparer.Ordinal).ToArray();
            return (bucket.SortedCache, _resourceVersion);
        }
    }

    public int Count(string resource)
    {
        lock (_lock) return BucketOf(resource).Objects.Count;
    }

    private Bucket BucketOf(string resource) =>
        _buckets.TryGetValue(resource, out var b) ? b : throw new ArgumentException($"resource {resource} is not registered", nameof(resource));

    private static StoredObject Materialize(ResourceType type, string? ns, string name, long rv, JsonObject obj)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (obj["metadata"]?["labels"] is JsonObject l)
            foreach (var (k, v) in l)
                labels[k] = v?.GetValue<string>() ?? "";
        var fields = new Dictionary<string, string>(type.SelectableFields.Count, StringComparer.Ordinal);
        foreach (var path in type.SelectableFields)
            fields[path] = FieldValue(obj, path);
        return new StoredObject(type, ns, name, rv, JsonWire.Utf8(obj), labels, fields);
    }

    // Field selectors compare strings; absent fields read as "" and booleans as "true"/"false",
    // which is how the apiserver's ToSelectableFields renders them (spec.unschedulable absent = "false").
    private static string FieldValue(JsonObject obj, string path)
    {
        JsonNode? node = obj;
        foreach (var part in path.Split('.'))
        {
            node = node is JsonObject o ? o[part] : null;
            if (node is null) break;
        }
        if (node is JsonValue v)
        {
            return v.GetValueKind() switch
            {
                JsonValueKind.String => v.GetValue<string>(),
                JsonValueKind.True => "true",
                JsonValueKind.False => "false",
                _ => v.ToJsonString(),
            };
        }
        return path is "spec.unschedulable" or "spec.hostNetwork" ? "false" : "";
    }

    private void Publish(Bucket bucket, StoredEvent ev)
    {
        bucket.History.Enqueue(ev);
        while (bucket.History.Count > _historyLimit)
            bucket.CompactedThrough = bucket.History.Dequeue().ResourceVersion;
        if (bucket.Watchers.Count == 0) return;
        var item = new ChangeItem(ev);
        for (var i = bucket.Watchers.Count - 1; i >= 0; i--)
        {
            var w = bucket.Watchers[i];
            w.Offer(item);
            if (w.Overflowed) bucket.Watchers.RemoveAt(i);
        }
    }

    /// <summary>
    /// Opens a watch. With fromResourceVersion null the current objects come back as the initial
    /// (synthetic ADDED) set; otherwise the retained events after it. Registration and the snapshot
    /// are taken under one lock so that nothing falls between them.
    /// </summary>
    internal (Watcher Watcher, IReadOnlyList<StoredObject> Initial, IReadOnlyList<StoredEvent> Replay, long StartResourceVersion)
        OpenWatch(string resource, long? fromResourceVersion)
    {
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            IReadOnlyList<StoredObject> initial = [];
            IReadOnlyList<StoredEvent> replay = [];
            if (fromResourceVersion is null)
            {
                bucket.SortedCache ??= bucket.Objects.Values.OrderBy(o => o.Key, StringComparer.Ordinal).ToArray();
                initial = bucket.SortedCache;
            }
            else
            {
                var from = fromResourceVersion.Value;
                if (from < bucket.CompactedThrough)
                    throw new ResourceVersionTooOldException(from, bucket.CompactedThrough);
                replay = bucket.History.Where(e => e.ResourceVersion > from).ToArray();
            }
            var watcher = new Watcher(bucket.Type, _watcherCapacity);
            bucket.Watchers.Add(watcher);
            return (watcher, initial, replay, _resourceVersion);
        }
    }

    internal void CloseWatch(Watcher watcher)
    {
        lock (_lock)
        {
            if (_buckets.TryGetValue(watcher.Type.Resource, out var b)) b.Watchers.Remove(watcher);
        }
        watcher.CompleteCleanly();
    }

    /// <summary>
    /// Queues a bookmark behind every event already queued for this watcher, so a client that
    /// moves its resourceVersion to it can never skip an undelivered change.
    /// </summary>
    internal void RequestBookmark(Watcher watcher)
    {
        lock (_lock) watcher.Offer(new BookmarkItem(_resourceVersion));
    }

    /// <summary>
    /// Queues a bookmark at the current resourceVersion behind every event already queued, on every open watch, and
    /// returns that version: a client whose resourceVersion reaches it has seen every change made so far (tests use
    /// it as a barrier after moving a hand-moved clock, instead of sleeping).
    /// </summary>
    public long BookmarkAll()
    {
        lock (_lock)
        {
            foreach (var b in _buckets.Values)
                foreach (var w in b.Watchers) w.Offer(new BookmarkItem(_resourceVersion));
            return _resourceVersion;
        }
    }

    /// <summary>
    /// Holds delivery on every watch stream until <see cref="ReleaseWatches"/>; events keep queueing
    /// (up to each watcher's capacity). A benchmark builds a backlog this way, so what it then times is
    /// how fast the client drains it, not how fast this store can produce changes.
    /// </summary>
    internal void HoldWatches()
    {
        lock (_lock) if (_delivery.Task.IsCompleted) _delivery = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    internal void ReleaseWatches()
    {
        lock (_lock) _delivery.TrySetResult();
    }

    /// <summary>Completed while watch delivery is open.</summary>
    internal Task WatchDelivery { get { lock (_lock) return _delivery.Task; } }

    private static TaskCompletionSource Open()
    {
        var open = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        open.SetResult();
        return open;
    }

    internal int InjectRaw(string resource, byte[] line)
    {
        lock (_lock)
        {
            var bucket = BucketOf(resource);
            foreach (var w in bucket.Watchers) w.Offer(new RawItem(line));
            return bucket.Watchers.Count;
        }
    }

    internal int WatcherCount
    {
        get { lock (_lock) return _buckets.Values.Sum(b => b.Watchers.Count); }
    }

    internal int WatcherCountOf(string resource)
    {
        lock (_lock) return _buckets.TryGetValue(resource, out var b) ? b.Watchers.Count : 0;
    }

    internal void AbortAllWatches()
    {
        lock (_lock)
        {
            foreach (var b in _buckets.Values)
            {
                foreach (var w in b.Watchers) w.Abort();
                b.Watchers.Clear();
            }
        }
    }

    internal void CompleteAllWatches()
    {
        lock (_lock)
        {
            foreach (var b in _buckets.Values)
            {
                foreach (var w in b.Watchers) w.CompleteCleanly();
                b.Watchers.Clear();
            }
        }
    }

    /// <summary>Forgets all retained events: any watch resuming from before now gets 410 Expired.</summary>
    public void CompactHistory()
    {
        lock (_lock)
        {
            foreach (var b in _buckets.Values)
            {
                b.History.Clear();
                b.CompactedThrough = _resourceVersion;
            }
        }
    }

    /// <summary>
    /// Simulates an apiserver restarted on a new storage history: watches end abruptly, history is
    /// gone, the counter jumps to at least the floor and every object gets a fresh resourceVersion.
    /// </summary>
    internal void Restart(long newResourceVersionFloor)
    {
        lock (_lock)
        {
            foreach (var b in _buckets.Values)
            {
                foreach (var w in b.Watchers) w.Abort();
                b.Watchers.Clear();
            }
            _resourceVersion = Math.Max(_resourceVersion, newResourceVersionFloor - 1);
            foreach (var b in _buckets.Values)
            {
                foreach (var key in b.Objects.Keys.ToArray())
                {
                    var old = b.Objects[key];
                    var obj = old.ToJsonObject();
                    var rv = ++_resourceVersion;
                    obj["metadata"]!.AsObject()["resourceVersion"] = rv.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    b.Objects[key] = Materialize(b.Type, old.Namespace, old.Name, rv, obj);
                }
                b.SortedCache = null;
                b.History.Clear();
            }
            foreach (var b in _buckets.Values) b.CompactedThrough = _resourceVersion;
        }
    }
}

/// <summary>Kubernetes metav1.Time rendering: RFC 3339, whole seconds, UTC.</summary>
public static class KubeTime
{
    public static string Format(DateTimeOffset t) =>
        t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    public static DateTimeOffset? Parse(string? s) =>
        DateTimeOffset.TryParse(s, System.Globalization.CultureInfo.InvariantCulture,
            System.Globalization.DateTimeStyles.AssumeUniversal | System.Globalization.DateTimeStyles.AdjustToUniversal, out var t) ? t : null;
}
