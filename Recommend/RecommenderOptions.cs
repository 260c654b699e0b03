namespace Karpetrack;

public sealed record RecommenderOptions
{
    /// <summary>Only classes of this Spot region are bought; null = the region most existing nodes are in.</summary>
    public string? Region { get; init; }
    /// <summary>Category codes allowed for new nodes (gp, ch, mh, gpu); empty = all but bare metal.</summary>
    public IReadOnlyList<string> Categories { get; init; } = [];
    public decimal? MaxPricePerHour { get; init; }
    public decimal ReplaceThresholdPercent { get; init; } = 20;
    public decimal ReplaceThresholdDollars { get; init; } = 0.005m;

    /// <summary>
    /// The replacement rule: a saving worth buying nodes for reaches both thresholds. Pure removals do not
    /// use it (any positive saving counts).
    /// </summary>
    public bool SavesEnoughToReplace(decimal currentPerHour, decimal savingPerHour) =>
        savingPerHour >= ReplaceThresholdDollars && savingPerHour >= currentPerHour * ReplaceThresholdPercent / 100;
    /// <summary>GPUs per GPU class (the feed does not say); classes not listed count as one GPU.</summary>
    public IReadOnlyDictionary<string, int> GpuPerClass { get; init; } = new Dictionary<string, int>();
    /// <summary>Kubelet and system reservation assumed for a class no existing node shows: 100m cpu and 5 % of memory.</summary>
    public long DefaultReservedMilliCpu { get; init; } = 100;
    public double DefaultReservedMemoryShare { get; init; } = 0.05;
    /// <summary>Nodes considered together for a multi-node consolidation (the least utilized first).</summary>
    public int MultiNodeCandidates { get; init; } = 10;
    public int MaxPodsPerNode { get; init; } = 110;
    /// <summary>Managed capacity limits and the labels and taints of new pools (the defaults change no plan).</summary>
    public PoolPolicy Pools { get; init; } = PoolPolicy.None;
}
