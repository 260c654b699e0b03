using System.Runtime.InteropServices;

namespace Karpetrack;

/// <summary>What the recommender reads off a pod: its name as plans show it, its demand in the packer's terms, where it runs.</summary>
internal static class PodRules
{
    public static string Describe(PodFacts p) => $"{p.Namespace}/{p.Name}";

    /// <summary>
    /// The packer's GPU dimension: nvidia.com/gpu, which the model always tracks (Spot's GPU classes are NVIDIA),
    /// plus amd.com/gpu when --resources lists it.
    /// </summary>
    public static long Gpus(long[] amounts, ResourceTable t)
    {
        long gpu = t.GpuIndex < amounts.Length ? amounts[t.GpuIndex] : 0;
        if (t.AmdGpuIndex >= 0 && t.AmdGpuIndex < amounts.Length) gpu += amounts[t.AmdGpuIndex];
        return gpu;
    }

    public static Demand DemandOf(PodFacts p, ResourceTable t) =>
        new(p.Requests[ResourceTable.Cpu], p.Requests[ResourceTable.Memory], Gpus(p.Requests, t), 1);

    /// <summary>The pods bound to each node, in their order in <paramref name="pods"/> (two passes over the pods, no grouping objects).</summary>
    public static Dictionary<string, PodFacts[]> ByNode(PodFacts[] pods) => ByNode(pods, movableOnly: false);

    /// <summary>
    /// The same with <paramref name="movableOnly"/>: only the pods a removal moves (<see cref="Movable"/>), so that each
    /// node's array is its <see cref="Movable"/> pods, in their order, without a second copy.
    /// </summary>
    public static Dictionary<string, PodFacts[]> ByNode(PodFacts[] pods, bool movableOnly)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in pods)
            if (p.Node is not null && (!movableOnly || IsMovable(p))) CollectionsMarshal.GetValueRefOrAddDefault(counts, p.Node, out _)++;
        var byNode = new Dictionary<string, PodFacts[]>(counts.Count, StringComparer.Ordinal);
        foreach (var (node, count) in counts) byNode[node] = new PodFacts[count];
        foreach (var key in counts.Keys) counts[key] = 0;
        foreach (var p in pods)
            if (p.Node is not null && (!movableOnly || IsMovable(p))) byNode[p.Node][CollectionsMarshal.GetValueRefOrNullRef(counts, p.Node)++] = p;
        return byNode;
    }

    /// <summary>The pods a removal moves: all but DaemonSet and mirror pods, which go with their node.</summary>
    public static PodFacts[] Movable(PodFacts[] onNode) => onNode.Where(IsMovable).ToArray();

    /// <summary>A pod a node's removal moves: not a DaemonSet or mirror pod (overhead, which goes with the node).</summary>
    public static bool IsMovable(PodFacts p) => !p.IsOverhead;

    /// <summary>The anti-affinity groups (PodShape.SelfAntiAffinityKey) of the pods bound to each node; most nodes have none.</summary>
    public static Dictionary<string, HashSet<string>> AntiAffinityGroups(PodFacts[] pods)
    {
        var groups = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var p in pods)
            if (p.Node is not null && p.Shape.SelfAntiAffinityKey is { } key)
            {
                if (!groups.TryGetValue(p.Node, out var set)) groups[p.Node] = set = new HashSet<string>(StringComparer.Ordinal);
                set.Add(key);
            }
        return groups;
    }
}
