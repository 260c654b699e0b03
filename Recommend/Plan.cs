namespace Karpetrack;

public enum RecommendationType { Provision, Replace, Consolidate, DeleteEmpty }

public sealed record NewNode(string ServerClass, int Count, decimal PricePerHour);

/// <summary>A node being provisioned (its pool exists, its node has not joined): capacity pending pods may count on.</summary>
public sealed record InFlightNode(string Pool, string ServerClass);

/// <summary>A pod to evict and where it goes: an existing node, or a new node "&lt;class&gt;#n" of the recommendation.</summary>
public sealed record PodMove(string Namespace, string Pod, string From, string To);

/// <summary>Why a node cannot be disrupted: a bounded reason code plus the pods and budgets involved.</summary>
public sealed record Blocker(string Reason, IReadOnlyList<string> Pods, IReadOnlyList<string> Pdbs)
{
    /// <summary>Text for people beside the code, when the code alone does not say it (the managed capacity limit a replacement would pass); null: none.</summary>
    public string? Detail { get; init; }
}

/// <summary>
/// A command of the plan, as a plain value that can be shown, explained, checked and carried out: which nodes go,
/// which new nodes come, where each pod moves, what it costs and saves, and why.
/// </summary>
public sealed record Recommendation(
    string Id,
    RecommendationType Type,
    IReadOnlyList<string> Nodes,          // exactly the nodes to remove or replace; empty for provisioning
    IReadOnlyList<NewNode> NewNodes,
    IReadOnlyList<PodMove> Moves,
    IReadOnlyList<string> PendingPods,     // provisioning: the pending pods served ("ns/name")
    decimal CurrentCostPerHour,
    decimal NewCostPerHour,
    decimal LowerBoundPerHour,
    int PodsEvicted,
    int PdbHeadroom,                       // the smallest disruptionsAllowed among budgets the moves touch (-1: none)
    IReadOnlyList<string> Reasons)
{
    public decimal SavingsPerHour => CurrentCostPerHour - NewCostPerHour;
    public decimal SavingsPerMonth => SavingsPerHour * 730;

    /// <summary>
    /// Set while the nodes it removes have not yet been removable for --consolidate-after (--consolidate-after-empty for
    /// delete-empty): not before this time may it be acted on. Null: it may be acted on now.
    /// </summary>
    public DateTimeOffset? ActionableAt { get; init; }
    /// <summary>Why it is not yet actionable ("waiting for consolidate-after (4m12s left)"); null when <see cref="ActionableAt"/> is.</summary>
    public string? Waiting { get; init; }
    /// <summary>A replacement of a managed node past --expire-after (made whether or not it saves; no consolidate-after wait).</summary>
    public bool Expired { get; init; }

    /// <summary>True while <see cref="ActionableAt"/> is still ahead of <paramref name="now"/>: the actuator leaves it alone.</summary>
    public bool WaitingAt(DateTimeOffset now) => ActionableAt is { } at && now < at;
}

public sealed record Plan(
    IReadOnlyList<Recommendation> Recommendations,
    IReadOnlyDictionary<string, IReadOnlyList<Blocker>> Blockers,
    IReadOnlyList<(string Pod, string Reason)> Unplaceable,
    decimal ProvisioningCostPerHour,
    decimal ProvisioningLowerBoundPerHour,
    string Region)
{
    /// <summary>Today's cost, the cost after every recommendation, the lower bound; null when the plan was made without them (tests, Empty).</summary>
    public ClusterCosts? Costs { get; init; }

    /// <summary>
    /// The two bounds behind <see cref="ProvisioningLowerBoundPerHour"/>: the resource (dual) LP's, and Farley's bound of the
    /// configuration LP (0 when column generation did not run). 0 without pending pods (or when the plan was made without them).
    /// </summary>
    public decimal ProvisioningResourceBoundPerHour { get; init; }
    /// <inheritdoc cref="ProvisioningResourceBoundPerHour"/>
    public decimal ProvisioningConfigurationBoundPerHour { get; init; }

    public static readonly Plan Empty = new([], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "");
}
