namespace Karpetrack;

/// <summary>One thing to place: a pod, or anything with a demand. Items of the same AntiAffinityGroup (≥ 0) never share a bin.</summary>
public sealed record PackItem(int Id, Demand Demand, int Constraint, int AntiAffinityGroup = -1);

/// <summary>A node shape one can buy. Capacity = allocatable minus the DaemonSet pods that would land there.</summary>
public sealed record BinType(int Id, string Name, Demand Capacity, decimal PricePerHour, int MaxCount = int.MaxValue);

/// <summary>Capacity already paid for: used first, at no cost.</summary>
public sealed record ExistingBin(int Id, string Name, Demand Free);

/// <summary>
/// The packing problem, free of Kubernetes: the recommender turns node selectors, affinity and taints into
/// compatibility classes (<see cref="PackItem.Constraint"/>) and answers which classes may use which bins.
/// </summary>
public sealed class PackingProblem
{
    public required IReadOnlyList<PackItem> Items { get; init; }
    public required IReadOnlyList<BinType> Types { get; init; }
    public IReadOnlyList<ExistingBin> Existing { get; init; } = [];
    public required Func<int, BinType, bool> TypeAllows { get; init; }
    public required Func<int, ExistingBin, bool> BinAllows { get; init; }
}

public sealed record PlacedBin(BinType Type, IReadOnlyList<int> Items, Demand Used);

public sealed record Unplaced(int Item, string Reason);

/// <summary>
/// Items are ids of <see cref="PackItem"/>; OnExisting maps an item id to an existing bin id. Cost is the hourly
/// price of the new bins; LowerBound is a proven lower bound on that cost for the items placed.
/// </summary>
public sealed record PackingSolution(
    IReadOnlyList<PlacedBin> NewBins,
    IReadOnlyDictionary<int, int> OnExisting,
    IReadOnlyList<Unplaced> Unplaced,
    decimal Cost,
    decimal LowerBound,
    string Strategy)
{
    /// <summary>True when the search proved Cost optimal (small problems only).</summary>
    public bool ProvenOptimal { get; init; }
    /// <summary>
    /// The resource (dual) LP bound, with its integrality terms. <see cref="LowerBound"/> is the higher of it and
    /// <see cref="ConfigurationBound"/> (the latter capped at Cost when every item is placed). Set by <see cref="Packer.Solve"/>.
    /// </summary>
    public decimal ResourceBound { get; init; }
    /// <summary>Farley's bound of the configuration LP; 0 when column generation did not run (or its bound does not apply).</summary>
    public decimal ConfigurationBound { get; init; }
}
