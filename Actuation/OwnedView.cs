using k8s.Models;

namespace Karpetrack;

/// <summary>A Spot node as a fresh, unfiltered LIST shows it: its pool, whether it is Karpetrack's, and the disruption it carries.</summary>
public sealed record OwnedNode(string Name, string Pool, bool Managed, string? Disruption, bool Unschedulable, bool Ready,
    DateTimeOffset? DisruptionSince = null, IReadOnlyDictionary<string, string>? Labels = null);

/// <summary>
/// What Karpetrack owns, read fresh from both APIs and independent of --node-selector: its pools
/// (deleting ones included) and every node of a Spot pool. Ownership, adoption, rollback and the
/// disruption count are decided on this, never on the reflector's filtered snapshot, so a selector
/// that hides managed nodes cannot make their pools look empty.
/// </summary>
public sealed class OwnedView
{
    private readonly Dictionary<string, SpotNodePool> pools;
    private readonly ILookup<string, OwnedNode> byPool;

    public OwnedView(IReadOnlyList<SpotNodePool> pools, IReadOnlyList<OwnedNode> nodes)
    {
        Pools = pools;
        Nodes = nodes;
        this.pools = pools.GroupBy(p => p.Name, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        byPool = nodes.Where(n => n.Pool.Length > 0).ToLookup(n => n.Pool, StringComparer.Ordinal);
    }

    public IReadOnlyList<SpotNodePool> Pools { get; }
    public IReadOnlyList<OwnedNode> Nodes { get; }

    /// <summary>The selector of the LIST: every node a Spot pool made carries its pool's name.</summary>
    public const string NodeSelector = SpotLabels.Pool;

    public static async Task<OwnedView> LoadAsync(KubeClient kube, SpotApiClient spot, string cloudspace, CancellationToken ct)
    {
        var pools = await spot.ListNodePoolsAsync(cloudspace, ct).ConfigureAwait(false);
        var nodes = await kube.ListNodesAsync(NodeSelector, ct).ConfigureAwait(false);
        return new OwnedView(pools, nodes.Select(Of).ToList());
    }

    public static OwnedNode Of(V1Node n)
    {
        IDictionary<string, string> labels = n.Metadata?.Labels ?? new Dictionary<string, string>();
        IDictionary<string, string> annotations = n.Metadata?.Annotations ?? new Dictionary<string, string>();
        bool ready = n.Status?.Conditions?.Any(c => c.Type == "Ready" && c.Status == "True") == true;
        return new OwnedNode(n.Metadata?.Name ?? "", (labels.TryGetValue(SpotLabels.Pool, out var pool) ? pool : ""),
            labels.TryGetValue(Actuator.ManagedLabel, out var managed) && managed == "true", (annotations.TryGetValue(Actuator.DisruptionAnnotation, out var d) ? d : null),
            n.Spec?.Unschedulable == true, ready,
            annotations.TryGetValue(Actuator.DisruptionSinceAnnotation, out var since)
                && DateTimeOffset.TryParse(since, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var at) ? at : null,
            new Dictionary<string, string>(labels, StringComparer.Ordinal));
    }

    public SpotNodePool? Pool(string name) => pools.GetValueOrDefault(name);

    /// <summary>Any node of the pool exists (Ready or not): the pool is not empty and must not be deleted as if it were.</summary>
    public bool HasNodes(string pool) => byPool[pool].Any();

    public bool HasReadyNode(string pool) => byPool[pool].Any(n => n.Ready);

    public IEnumerable<OwnedNode> NodesOf(string pool) => byPool[pool];

    /// <summary>A pool whose DELETE was accepted (deletionTimestamp set, finalizers pending) or that is no longer listed: going away.</summary>
    public bool Deleting(string pool) => !pools.TryGetValue(pool, out var p) || p.Deleting;

    /// <summary>
    /// Nodes that count against --max-disrupted-nodes: every node carrying Karpetrack's disruption
    /// annotation stays disrupted until it is gone from the unfiltered node list.
    /// </summary>
    public IEnumerable<string> Disrupted => Nodes.Where(n => n.Disruption is not null).Select(n => n.Name);
}
