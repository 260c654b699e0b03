namespace Karpetrack;

/// <summary>Cpu (millicores) and memory (bytes) held by Karpetrack-managed pools, or about to be.</summary>
public readonly record struct ManagedCapacity(long MilliCpu, long MemoryBytes)
{
    public static readonly ManagedCapacity Zero = new(0, 0);

    public static ManagedCapacity Of(ServerClass c, int count = 1) => new((long)(c.Cpu * 1000) * count, c.MemoryBytes * count);

    public static ManagedCapacity operator +(ManagedCapacity a, ManagedCapacity b) => new(a.MilliCpu + b.MilliCpu, a.MemoryBytes + b.MemoryBytes);
    public static ManagedCapacity operator -(ManagedCapacity a, ManagedCapacity b) => new(a.MilliCpu - b.MilliCpu, a.MemoryBytes - b.MemoryBytes);

    public override string ToString() => $"{MilliCpu / 1000.0:0.###} cpu and {MemoryBytes / 1e9:0.##} GB";
}

/// <summary>
/// What the seed's SpotNodePool offered, as one pure value: limits on the total cpu and memory that Karpetrack-managed
/// pools may hold (runaway protection), how long a node must stay removable before a disruptive recommendation on it is
/// acted on, when managed nodes expire, and the custom labels and taints of new pools. Every check here is pure: the
/// recommender calls them while planning and the actuator calls <see cref="CheckCreate"/> again before each pool create.
/// The defaults change nothing (no limit, no wait, no expiry, nothing added).
/// </summary>
public sealed record PoolPolicy
{
    public static readonly PoolPolicy None = new();

    /// <summary>Total cpu, in millicores, of managed pools (their nodes and pools still being provisioned); null: no limit.</summary>
    public long? MaxManagedMilliCpu { get; init; }
    /// <summary>Total memory, in bytes, of managed pools; null: no limit.</summary>
    public long? MaxManagedMemoryBytes { get; init; }
    /// <summary>A node must be removable continuously for this long before a consolidation or replacement of it is acted on (0: at once).</summary>
    public TimeSpan ConsolidateAfter { get; init; }
    /// <summary>The same for an empty node (delete-empty).</summary>
    public TimeSpan ConsolidateAfterEmpty { get; init; }
    /// <summary>Managed nodes older than this are replaced; null: never.</summary>
    public TimeSpan? ExpireAfter { get; init; }
    /// <summary>Custom labels of new pools (beside Karpetrack's own), which their nodes carry.</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);
    /// <summary>Custom taints of new pools: only pods that tolerate them are planned onto new nodes.</summary>
    public IReadOnlyList<Taint> Taints { get; init; } = [];

    public bool LimitsCapacity => MaxManagedMilliCpu is not null || MaxManagedMemoryBytes is not null;

    /// <summary>
    /// Null when pools adding <paramref name="adding"/> to the <paramref name="managed"/> capacity stay within the limits,
    /// else the stable refusal reason ("managed capacity limit: …") to log, count and show. Freed capacity (a replaced
    /// managed node) is the caller's to subtract from <paramref name="managed"/> only once it is gone.
    /// </summary>
    public string? CheckCreate(ManagedCapacity managed, ManagedCapacity adding)
    {
        var after = managed + adding;
        if (MaxManagedMilliCpu is { } cpu && after.MilliCpu > cpu)
            return $"managed capacity limit: {managed.MilliCpu / 1000.0:0.###} cpu managed + {adding.MilliCpu / 1000.0:0.###} new would pass --max-managed-cpu {cpu / 1000.0:0.###}";
        if (MaxManagedMemoryBytes is { } mem && after.MemoryBytes > mem)
            return $"managed capacity limit: {managed.MemoryBytes / 1e9:0.##} GB managed + {adding.MemoryBytes / 1e9:0.##} GB new would pass --max-managed-memory {mem / 1e9:0.##} GB";
        return null;
    }

    /// <summary>How long a node that became removable at <paramref name="since"/> must still wait at <paramref name="now"/> (zero: it may be acted on).</summary>
    public TimeSpan ConsolidationWait(bool empty, DateTimeOffset since, DateTimeOffset now)
    {
        var wait = (empty ? ConsolidateAfterEmpty : ConsolidateAfter) - (now - since);
        return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
    }

    /// <summary>True when a managed node created at <paramref name="created"/> is past --expire-after at <paramref name="now"/>.</summary>
    public bool Expired(DateTimeOffset? created, DateTimeOffset now) =>
        ExpireAfter is { } ttl && created is { } c && now - c >= ttl;

    /// <summary>True when a pod with these tolerations may run on a new pool's nodes (every NoSchedule/NoExecute taint tolerated).</summary>
    public bool Tolerated(IReadOnlyList<Toleration> tolerations) =>
        Taints.All(t => t.Effect == "PreferNoSchedule" || tolerations.Any(x => x.Tolerates(t)));

    /// <summary>The custom labels of a new pool: Karpetrack's own (they win) and the policy's.</summary>
    public Dictionary<string, string> PoolLabels(IReadOnlyDictionary<string, string> own)
    {
        var labels = new Dictionary<string, string>(Labels, StringComparer.Ordinal);
        foreach (var (k, v) in own) labels[k] = v;
        return labels;
    }
}
