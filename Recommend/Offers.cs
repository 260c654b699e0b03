namespace Karpetrack;

/// <summary>A server class one may buy, as a bin type plus the labels its nodes will carry.</summary>
internal sealed record Offer(BinType Bin, PricedClass Class, IReadOnlyDictionary<string, string> Labels, bool Gpu)
{
    /// <summary>The taints a new node of the offer will carry (--pool-taints): only pods tolerating them go there.</summary>
    public Taint[] Taints { get; init; } = [];
}

/// <summary>
/// What may be bought: the priced, available classes of one region that the options allow, each with the room a
/// new node of it leaves for pods (allocatable as existing nodes of the class show it, minus the DaemonSets that
/// would land there).
/// </summary>
internal static class Offers
{
    /// <summary>The region to buy in: the options', else the one most existing nodes are in.</summary>
    public static string Region(ClusterSnapshot snap, RecommenderOptions o) =>
        o.Region ?? snap.Nodes.Select(n => SpotLabels.RegionOfClass(n.ServerClass)).Where(r => r is not null)
            .GroupBy(r => r!).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).Select(g => g.Key).FirstOrDefault() ?? "";

    /// <summary>In class-name order; each bin type's id is its position.</summary>
    public static List<Offer> For(ClusterSnapshot snap, PriceBook book, string region, RecommenderOptions o, DaemonSetRecord[] daemonSets)
    {
        var dsShapes = daemonSets.Select(d => (Shape: ShapeOf(d.Template), Requests: d.Template.Requests)).ToArray();
        var offers = new List<Offer>();
        int id = 0;
        Taint[] taints = [.. o.Pools.Taints];
        foreach (var (name, pc) in book.Classes.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var c = pc.Class;
            if (region.Length > 0 && c.Region != region) continue;
            // Spot accepts bids only on classes with a minimum bid. The public feed carries none: once the Spot API has
            // given them, a class without one is never bought; from the feed alone, bare metal (which has none) is left out.
            if (c.Category == "bm" || (book.KnowsMinBids && pc.Prices.MinBid is null)) continue;
            if (pc.Prices.Availability is { } a && a != "available") continue;
            if (o.Categories.Count > 0 && !o.Categories.Contains(c.Category)) continue;
            var price = pc.Prices.SpotPrice;
            if (o.MaxPricePerHour is { } max && price > max) continue;
            bool gpu = c.Category == "gpu";
            var labels = o.Pools.Labels.Count == 0 ? NewNodeLabels(c) : o.Pools.PoolLabels(NewNodeLabels(c));
            var (reservedCpu, reservedMem) = Reserved(snap, c, o);
            long cpu = (long)(c.Cpu * 1000) - reservedCpu, mem = c.MemoryBytes - reservedMem;
            long dsCpu = 0, dsMem = 0, dsPods = 0;
            foreach (var (shape, req) in dsShapes)
            {
                if (!shape.AllowsNode(labels, o.Pools.Taints)) continue;
                dsCpu += req[ResourceTable.Cpu];
                dsMem += req[ResourceTable.Memory];
                dsPods++;
            }
            var capacity = new Demand(cpu - dsCpu, mem - dsMem, GpusOf(c, o), o.MaxPodsPerNode - dsPods);
            if (!capacity.IsNonNegative) continue;
            offers.Add(new Offer(new BinType(id++, name, capacity, price), pc, labels, gpu) { Taints = taints });
        }
        return offers;
    }

    /// <summary>The labels a node of this class will carry when Karpetrack provisions it.</summary>
    public static Dictionary<string, string> NewNodeLabels(ServerClass c) => new(StringComparer.Ordinal)
    {
        [SpotLabels.ServerClass] = c.Name,
        [SpotLabels.CapacityType] = "spot",
        [SpotLabels.TopologyRegion] = SpotLabels.RegionSuffix(c.Region).ToUpperInvariant(),
        ["karpetrack.io/managed"] = "true",
        ["karpetrack.io/category"] = c.Category,
        ["kubernetes.io/os"] = "linux",
        ["kubernetes.io/arch"] = "amd64",
    };

    /// <summary>GPUs a node of the class has: the feed does not say, so --gpus-per-class, else one per GPU class.</summary>
    public static int GpusOf(ServerClass c, RecommenderOptions o) => c.Category == "gpu" ? o.GpuPerClass.GetValueOrDefault(c.Name, 1) : 0;

    /// <summary>Capacity minus allocatable as existing nodes of the class show it, else the documented default.</summary>
    public static (long Cpu, long Memory) Reserved(ClusterSnapshot snap, ServerClass c, RecommenderOptions o)
    {
        foreach (var n in snap.Nodes)
        {
            if (n.ServerClass != c.Name || n.Capacity[ResourceTable.Cpu] <= 0) continue;
            return (Math.Max(0, n.Capacity[ResourceTable.Cpu] - n.Allocatable[ResourceTable.Cpu]),
                    Math.Max(0, n.Capacity[ResourceTable.Memory] - n.Allocatable[ResourceTable.Memory]));
        }
        return (o.DefaultReservedMilliCpu, (long)(c.MemoryBytes * o.DefaultReservedMemoryShare));
    }

    private static PodShape ShapeOf(PodRecord template) =>
        PodShape.Parse(template.Namespace, template.Owner, template.OwnerName, template.Name, template.Traits, template.Priority,
            template.LabelsJson, template.NodeSelectorJson, template.AffinityJson, template.TolerationsJson);
}
