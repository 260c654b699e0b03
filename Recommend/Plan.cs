namespace Karpetrack;

public enum RecommendationType { Provision, Replace, Consolidate, DeleteEmpty }

public sealed record NewNode(string ServerClass, int Count, decimal PricePerHour);

/// <summary>A node being provisioned (its pool exists, its node has not joined): capacity pending pods may count on.</summary>
public sealed record InFlightNode(string Pool, string ServerClass);

/// <summary>
/// A pod to evict and where it goes: an existing node, or a new node "&lt;class&gt;#n" of the recommendation.
/// </summary>
/// <remarks>
/// A plan at 5,000 nodes holds about 190,000 moves for as long as it is published. A move made by the recommender
/// (<see cref="PodMove(in PodFacts, string, string)"/>) keeps the pod's shape and packed name suffix, as the model does,
/// and builds <see cref="Pod"/> when it is read (served, hashed, shown): 32 bytes inline in the plan's array instead of
/// an object and a name string of 100-130 bytes. It compares, hashes and prints by its four texts, as the record it
/// replaces did.
/// </remarks>
public readonly struct PodMove : IEquatable<PodMove>
{
    // PodShape: the pod is Shape.NamePrefix + the unpacked suffix; Named: both texts as given.
    private readonly object? who;
    private readonly long suffix;

    public PodMove(string Namespace, string Pod, string From, string To)
    {
        who = new Named(Namespace, Pod);
        suffix = 0;
        this.From = From;
        this.To = To;
    }

    /// <summary>The move of <paramref name="pod"/> from <paramref name="from"/> to <paramref name="to"/>; its name is built when read.</summary>
    public PodMove(in PodFacts pod, string from, string to)
    {
        // Mirror pods are named after their node: the rare name that is not prefix + suffix is kept as text.
        if (pod.NameSuffix >= 0) { who = pod.Shape; suffix = pod.NameSuffix; }
        else { who = new Named(pod.Namespace, pod.Name); suffix = 0; }
        From = from;
        To = to;
    }

    public string Namespace => who switch { PodShape s => s.Namespace, Named n => n.Namespace, _ => null! };
    public string Pod => who switch
    {
        PodShape s => suffix > 0 ? s.NamePrefix + Scheduling.UnpackSuffix(suffix) : s.NamePrefix,
        Named n => n.Pod,
        _ => null!,
    };
    public string From { get; }
    public string To { get; }

    private string PodPrefix => who switch { PodShape s => s.NamePrefix, Named n => n.Pod, _ => "" };

    /// <summary>A buffer of this many chars always holds the pod's name for <see cref="TryWritePod"/>.</summary>
    internal int PodBufferLength => PodPrefix.Length + Scheduling.MaxSuffixLength;

    /// <summary>
    /// The pod's name written into <paramref name="buffer"/> without building a string (<paramref name="length"/> chars);
    /// false when it does not fit.
    /// </summary>
    internal bool TryWritePod(Span<char> buffer, out int length)
    {
        length = 0;
        string prefix = PodPrefix;
        if (prefix.Length + Scheduling.MaxSuffixLength > buffer.Length) return false;
        prefix.CopyTo(buffer);
        length = prefix.Length + (who is PodShape ? Scheduling.WriteSuffix(suffix, buffer[prefix.Length..]) : 0);
        return true;
    }

    /// <summary>Namespace, then pod name, ordinal: the order of a recommendation's moves; no name is built for it.</summary>
    internal static int CompareByPod(PodMove a, PodMove b)
    {
        int c = string.CompareOrdinal(a.Namespace, b.Namespace);
        if (c != 0) return c;
        // Sized to the two names (stack memory is zeroed per call: two fixed 256-char buffers cost 1 KB a comparison).
        int lx = a.PodBufferLength, ly = b.PodBufferLength;
        if (lx > 256 || ly > 256) return string.CompareOrdinal(a.Pod, b.Pod);
        Span<char> x = stackalloc char[lx];
        Span<char> y = stackalloc char[ly];
        if (a.TryWritePod(x, out int nx) && b.TryWritePod(y, out int ny))
            return x[..nx].SequenceCompareTo(y[..ny]);
        return string.CompareOrdinal(a.Pod, b.Pod);
    }

    public bool Equals(PodMove other) =>
        string.Equals(From, other.From, StringComparison.Ordinal) && string.Equals(To, other.To, StringComparison.Ordinal)
        && (ReferenceEquals(who, other.who) && suffix == other.suffix
            || string.Equals(Namespace, other.Namespace, StringComparison.Ordinal) && string.Equals(Pod, other.Pod, StringComparison.Ordinal));

    public override bool Equals(object? obj) => obj is PodMove other && Equals(other);
    public override int GetHashCode() => HashCode.Combine(Namespace, Pod, From, To);
    public static bool operator ==(PodMove a, PodMove b) => a.Equals(b);
    public static bool operator !=(PodMove a, PodMove b) => !a.Equals(b);
    public override string ToString() => $"PodMove {{ Namespace = {Namespace}, Pod = {Pod}, From = {From}, To = {To} }}";

    public void Deconstruct(out string Namespace, out string Pod, out string From, out string To) =>
        (Namespace, Pod, From, To) = (this.Namespace, this.Pod, this.From, this.To);

    private sealed record Named(string Namespace, string Pod);
}

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
