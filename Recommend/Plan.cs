namespace Karpetrack;

public enum RecommendationType { Provision, Replace, Consolidate, DeleteEmpty }

public sealed record NewNode(string ServerClass, int Count, decimal PricePerHour);

/// <summary>A node being provisioned (its pool exists, its node has not joined): capacity pending pods may count on.</summary>
public sealed record InFlightNode(string Pool, string ServerClass);

/// <summary>A pod to evict and where it goes: an existing node, or a new node "&lt;class&gt;#n" of the recommendation.</summary>
public sealed record PodMove(string Namespace, string Pod, string From, string To);

/// <summary>Why a node cannot be disrupted: a bounded reason code plus the pods and budgets involved.</summary>
public sealed record Blocker(string Reason, IReadOnlyList<string> Pods, IReadOnlyList<string> Pdbs);

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

    public static readonly Plan Empty = new([], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "");
}
