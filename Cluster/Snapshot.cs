namespace Karpetrack;

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
