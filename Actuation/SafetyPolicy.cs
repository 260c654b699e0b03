namespace Karpetrack;

/// <summary>The writes the actuator makes to a cluster (Kubernetes Events aside): each is checked by <see cref="SafetyPolicy"/> first.</summary>
public enum SafetyWrite
{
    CreatePool,
    Cordon,
    Evict,
    /// <summary>The DELETE of the pool of a drained node.</summary>
    DeletePool,
    /// <summary>The DELETE of one of Karpetrack's pools that has no node: a failed operation's new pool, or a pre-empted pool.</summary>
    DeleteUnusedPool,
    Uncordon,
}

/// <summary>The operation a write is for, as the policy sees it: its recommendation, the step it is in and the pools it bought.</summary>
public sealed record SafetyOperation(Recommendation Rec, OperationStep Step, IReadOnlyList<string>? NewPools = null);

/// <summary>
/// Everything the policy decides on, read by the caller before the check (the policy itself reads nothing):
/// the clock, the leadership term, the inputs' health, the disruption budgets' state, a fresh unfiltered
/// view of Karpetrack's pools and nodes, the snapshot's nodes, and the target of the write.
/// </summary>
public sealed record SafetyWorld
{
    public DateTimeOffset Now { get; init; }
    /// <summary>The leadership term this write would run on has ended (the lease was lost or its renew deadline passed).</summary>
    public bool TermEnded { get; init; }
    public bool CachesSynced { get; init; } = true;
    /// <summary>The resources whose synced cache has been out of touch with the API server for longer than the limit.</summary>
    public IReadOnlyList<string> StaleCaches { get; init; } = [];
    public bool PriceBookStale { get; init; }
    public bool CircuitOpen { get; init; }
    /// <summary>When the plan being acted on arrived; null: none yet.</summary>
    public DateTimeOffset? PlanAt { get; init; }
    /// <summary>When each operation last scaled up (created a pool, or saw its new nodes Ready), by recommendation id.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> ScaleUps { get; init; } = new Dictionary<string, DateTimeOffset>();
    /// <summary>The nodes of every operation in progress other than the one the write is for.</summary>
    public IReadOnlySet<string> OtherOperationNodes { get; init; } = new HashSet<string>();
    /// <summary>The new pools of every operation in memory.</summary>
    public IReadOnlySet<string> PoolsInFlight { get; init; } = new HashSet<string>();
    /// <summary>When each node disruption (cordon) started; those within the last hour count.</summary>
    public IReadOnlyList<DateTimeOffset> Disruptions { get; init; } = [];
    /// <summary>Karpetrack's pools and Spot nodes on a fresh, unfiltered LIST; null when it could not be read.</summary>
    public OwnedView? Owned { get; init; }
    /// <summary>The nodes of the cluster snapshot (those --node-selector shows), by name.</summary>
    public IReadOnlyDictionary<string, NodeView> Nodes { get; init; } = new Dictionary<string, NodeView>();
    /// <summary>The plan's blockers by node (checked before an operation starts).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<Blocker>> PlannedBlockers { get; init; } = new Dictionary<string, IReadOnlyList<Blocker>>();
    /// <summary>A node's blockers on the live model (its pods and their PDBs now).</summary>
    public Func<string, IReadOnlyList<Blocker>> LiveBlockers { get; init; } = _ => [];
    public PriceBook? Book { get; init; }
    public RecommenderOptions Thresholds { get; init; } = new();
    /// <summary>The capacity of Karpetrack's pools now, when a limit is set, and what the pool about to be created adds.</summary>
    public ManagedCapacity? Managed { get; init; }
    public ManagedCapacity Adding { get; init; }
    // The target of the write.
    public string? Node { get; init; }
    public string? Pool { get; init; }
    /// <summary>Pods on <see cref="Node"/> that are neither DaemonSet nor mirror pods nor terminating.</summary>
    public IReadOnlyList<string> RunningPods { get; init; } = [];
}

/// <summary>
/// The one place that says whether a write may happen. Pure: given the write, the operation and its
/// step, and the world as read just before, it returns null or the refusal with its stable reason.
/// Each rule applies to the writes and steps named with it; the leadership term to all of them.
/// </summary>
public sealed class SafetyPolicy(ActuationOptions options)
{
    /// <summary>The mid-drain blockers: someone marked the node or one of its pods not to be disrupted.</summary>
    private static readonly string[] DrainBlockers =
        [BlockerReasons.NodeDoNotDisrupt, BlockerReasons.NodeScaleDownDisabled, BlockerReasons.PodDoNotDisrupt, BlockerReasons.PodSafeToEvictFalse];

    public Refusal? Check(SafetyWrite write, SafetyOperation? op, SafetyWorld w)
    {
        if (w.TermEnded) return new(RefusalReason.LeaseLost, "the leadership term has ended");
        var step = op?.Step;
        return (write, step) switch
        {
            // Before an operation's first write (its first pool, or the cordon when it buys nothing): everything.
            (SafetyWrite.CreatePool or SafetyWrite.Cordon, OperationStep.Planned) =>
                Global(w) ?? (op!.Rec.Nodes.Count > 0 ? Disruption(op.Rec, w) : null),
            (SafetyWrite.CreatePool, _) => ManagedCapacity(w),
            // New nodes Ready, right before the first disruptive step: checked again against live state.
            (SafetyWrite.Cordon, OperationStep.WaitReady) =>
                Global(w) ?? Preempted(op!, w) ?? OwnedElsewhere(op!.Rec, op.Rec.Nodes, w) ?? Budget(op!.Rec, w) ?? (BuysNodes(op.Rec) && !op.Rec.Expired ? Savings(op.Rec, w) : null) ?? Live(op.Rec, w),
            (SafetyWrite.Cordon, _) => op is not null && w.Node is { } node ? OwnedElsewhere(op.Rec, [node], w) : null,
            (SafetyWrite.Evict, _) => BlockedMidDrain(w),
            (SafetyWrite.DeletePool, _) => LastBeforeDelete(w),
            (SafetyWrite.DeleteUnusedPool, _) => Unused(w),
            (SafetyWrite.Uncordon, _) => MayUncordon(op, w),
            _ => throw new ArgumentOutOfRangeException(nameof(write), write, "a write the policy does not know"),
        };
    }

    /// <summary>What holds for every action, dry-run included: caches synced, price book fresh, Spot API circuit closed, plan young enough.</summary>
    public Refusal? Global(SafetyWorld w)
    {
        if (!w.CachesSynced) return new(RefusalReason.CachesUnsynced, "the caches have not synced");
        if (w.StaleCaches.Count > 0)
            return new(RefusalReason.CachesStale, $"the {string.Join(", ", w.StaleCaches)} cache has had no watch for over {ActuationOptions.CacheOutOfTouchLimit.TotalSeconds:0} s");
        if (w.PriceBookStale) return new(RefusalReason.PriceBookStale, "the price book is stale");
        if (w.CircuitOpen) return new(RefusalReason.CircuitOpen, "the Spot API circuit breaker is open");
        if (options.Mode is ActuationMode.Approve or ActuationMode.Auto && w.PlanAt is { } at && w.Now - at > options.MaxPlanAge)
            return new(RefusalReason.PlanTooOld, $"the plan is older than {options.MaxPlanAge.TotalMinutes:0.#} min");
        return null;
    }

    /// <summary>
    /// Window, cooldown and the disruption budgets. A disrupted node counts until it is gone from the
    /// unfiltered node list, not until its pool's DELETE was accepted. Reasons stay the same from check to
    /// check (no countdown), so each is logged and counted once.
    /// </summary>
    private Refusal? Budget(Recommendation r, SafetyWorld w)
    {
        var now = w.Now;
        if (options.Window is { } window && !window.Contains(now)) return new(RefusalReason.OutsideWindow, $"outside the maintenance window {window}");
        // An operation's own scale-up (the new nodes of a replacement) does not hold back its own drain.
        if (w.ScaleUps.Any(kv => kv.Key != r.Id && now - kv.Value < options.ScaleUpCooldown))
            return new(RefusalReason.ScaleUpCooldown, $"cooling down after a scale-up (--scale-up-cooldown {options.ScaleUpCooldown.TotalSeconds:0}s)");
        var busy = w.OtherOperationNodes.Concat(w.Owned?.Disrupted ?? []).Where(n => !r.Nodes.Contains(n)).ToHashSet(StringComparer.Ordinal);
        if (busy.Count + r.Nodes.Count > options.MaxDisruptedNodes)
            return new(RefusalReason.MaxDisruptedNodes, $"{busy.Count} nodes are being disrupted and this needs {r.Nodes.Count} more (--max-disrupted-nodes {options.MaxDisruptedNodes})");
        int lastHour = w.Disruptions.Count(t => now - t <= TimeSpan.FromHours(1));
        int perHour = Math.Max(1, (int)Math.Floor(w.Nodes.Count * options.MaxDisruptedPercentPerHour / 100));
        if (lastHour + r.Nodes.Count > perHour)
            return new(RefusalReason.HourlyBudget, $"{lastHour} nodes disrupted in the last hour; at most {perHour} (--max-disrupted-percent-per-hour {options.MaxDisruptedPercentPerHour})");
        if (w.Owned is { } owned)
            foreach (var name in r.Nodes)
                if (owned.Nodes.FirstOrDefault(n => n.Name == name) is { } o && owned.Deleting(o.Pool))
                    return new(RefusalReason.PoolDeleting, $"the pool of {name} is being deleted");
        return null;
    }

    /// <summary>Before an operation that disrupts nodes starts: budgets, ownership, each node's state, age and blockers, and the saving.</summary>
    private Refusal? Disruption(Recommendation r, SafetyWorld w)
    {
        if (OwnedElsewhere(r, r.Nodes, w) is { } owned) return owned;
        if (Budget(r, w) is { } budget) return budget;
        foreach (var name in r.Nodes)
            if (w.Nodes.TryGetValue(name, out var v) && w.PoolsInFlight.Contains(v.Pool))
                return new(RefusalReason.OwnedByOperation, $"{name} belongs to an operation in progress");
        foreach (var name in r.Nodes)
        {
            if (!w.Nodes.TryGetValue(name, out var v)) return new(RefusalReason.NodeGone, $"{name} is gone");
            if (!v.Ready || !v.Schedulable || v.Deleting) return new(RefusalReason.NodeNotReady, $"{name} is {ClusterSnapshot.StateOf(v).ToString().ToLowerInvariant()}");
            if (v.Created is { } created && w.Now - created < options.ScaleUpCooldown)
                return new(RefusalReason.NodeTooYoung, $"{name} joined less than {options.ScaleUpCooldown.TotalMinutes:0.#} min ago");
            if (w.PlannedBlockers.TryGetValue(name, out var planned) && planned.Count > 0) return new(RefusalReason.Blocked, $"{name} is blocked: {planned[0].Reason}");
            var live = LiveDisruptionBlockers(w, name);
            if (live.Count > 0) return new(RefusalReason.Blocked, $"{name} is blocked: {live[0].Reason}{(live[0].Pods.Count > 0 ? " (" + live[0].Pods[0] + ")" : "")}");
        }
        // --expire-after: a node past its age is replaced because of its age, whatever that saves (the recommender
        // chose the cheapest new nodes its pods fit on); every check above still holds.
        if (r.Expired) return null;
        if (r.SavingsPerHour <= 0) return new(RefusalReason.SavesNothing, "it saves nothing");
        return BuysNodes(r) ? Savings(r, w) : null;
    }

    /// <summary>
    /// A node is disrupted by one operation at a time: none of <paramref name="nodes"/> may be a node of another operation in
    /// memory, nor carry (on the unfiltered view, or in the snapshot) the disruption annotation of another recommendation.
    /// The budget counts such a node as this operation's own, so it does not stop a second operation on the same node.
    /// </summary>
    private static Refusal? OwnedElsewhere(Recommendation r, IEnumerable<string> nodes, SafetyWorld w)
    {
        foreach (var name in nodes)
        {
            if (w.OtherOperationNodes.Contains(name)) return new(RefusalReason.OwnedByOperation, $"{name} belongs to an operation in progress");
            // The fresh unfiltered view when it lists the node, else the snapshot.
            var recorded = w.Owned?.Nodes.FirstOrDefault(n => n.Name == name) is { } seen ? seen.Disruption
                : w.Nodes.TryGetValue(name, out var v) ? v.Annotations.GetValueOrDefault(Actuator.DisruptionAnnotation) : null;
            if (recorded is not null && DisruptionRecord.Parse(recorded).RecommendationId is var other && other != r.Id)
                return new(RefusalReason.OwnedByOperation, $"{name} is cordoned for {other}");
        }
        return null;
    }

    /// <summary>A pool the operation bought lost its bid: its node is about to go, so nothing is disrupted in exchange for it.</summary>
    private static Refusal? Preempted(SafetyOperation op, SafetyWorld w) =>
        (op.NewPools ?? []).FirstOrDefault(p => w.Owned?.Pool(p) is { } pool && IsLost(pool)) is { } lost
            ? new(RefusalReason.PoolPreempted, $"pool {lost} lost its bid before its node was Ready")
            : null;

    /// <summary>A pool whose bid was lost (pre-empted).</summary>
    public static bool IsLost(SpotNodePool p) => p.BidStatus is { } s && s.Equals("Lost", StringComparison.OrdinalIgnoreCase);

    /// <summary>Live blockers, less a PDB at zero: that one is waited for during the drain, not a reason to give up.</summary>
    private static List<Blocker> LiveDisruptionBlockers(SafetyWorld w, string node) =>
        w.LiveBlockers(node).Where(b => b.Reason != BlockerReasons.PdbNoDisruptions).ToList();

    /// <summary>At the re-check before the cordon: each node still there and not blocked now.</summary>
    private static Refusal? Live(Recommendation r, SafetyWorld w)
    {
        foreach (var n in r.Nodes)
        {
            if (!w.Nodes.ContainsKey(n)) return new(RefusalReason.NodeGone, $"{n} is gone");
            if (LiveDisruptionBlockers(w, n).FirstOrDefault() is { } b) return new(RefusalReason.Blocked, $"{n} is blocked: {b.Reason}");
        }
        return null;
    }

    /// <summary>
    /// Removals that buy nodes in exchange (a replacement, or a multi-node consolidation onto new nodes)
    /// are held to the replacement thresholds; pure removals only need a positive saving.
    /// </summary>
    public static bool BuysNodes(Recommendation r) => r.Nodes.Count > 0 && (r.Type == RecommendationType.Replace || r.NewNodes.Count > 0);

    /// <summary>A replacement still saves the threshold at today's prices, or why not.</summary>
    private static Refusal? Savings(Recommendation r, SafetyWorld w)
    {
        decimal now = 0, next = 0;
        foreach (var n in r.Nodes)
        {
            if (!w.Nodes.TryGetValue(n, out var v) || w.Book is null || CostRules.NodePrice(v, w.Book) is not { } p) return new(RefusalReason.NoPrice, $"{n} has no price now");
            now += p;
        }
        foreach (var n in r.NewNodes)
        {
            if (w.Book?.NodePrice(n.ServerClass, "spot") is not { } p) return new(RefusalReason.NoPrice, $"{n.ServerClass} has no price now");
            next += p * n.Count;
        }
        var t = w.Thresholds;
        var saved = now - next;
        if (!t.SavesEnoughToReplace(now, saved))
            return new(RefusalReason.SavingBelowThreshold, $"the saving fell to {saved:0.####} $/h, below the threshold ({t.ReplaceThresholdPercent} %, {t.ReplaceThresholdDollars} $/h)");
        return null;
    }

    /// <summary>Before each pool create: the managed capacity limits (--max-managed-cpu, --max-managed-memory).</summary>
    private Refusal? ManagedCapacity(SafetyWorld w) =>
        w.Managed is { } managed && options.Pools.CheckCreate(managed, w.Adding) is { } limit ? new(RefusalReason.ManagedCapacityLimit, limit) : null;

    /// <summary>Before each eviction: a blocker that appeared mid-drain (someone marks a pod or the node do-not-disrupt) wins.</summary>
    private static Refusal? BlockedMidDrain(SafetyWorld w) =>
        w.Node is { } node && w.Nodes.ContainsKey(node) && w.LiveBlockers(node).FirstOrDefault(b => DrainBlockers.Contains(b.Reason)) is { } blocked
            ? new(RefusalReason.Blocked, $"{node} became blocked during the drain ({blocked.Reason})")
            : null;

    /// <summary>
    /// The last word before a drained node's pool goes: the node runs nothing but DaemonSet and mirror pods and pods already
    /// evicted, and on the unfiltered view the pool holds this node only (a second node, hidden by --node-selector or joined
    /// since the plan, would go with it undrained) and is sized for one.
    /// </summary>
    private static Refusal? LastBeforeDelete(SafetyWorld w)
    {
        var node = w.Node ?? "";
        if (w.RunningPods.Count > 0) return new(RefusalReason.PodsNotEvicted, $"{node} runs {w.RunningPods[0]}");
        if (w.Owned is not { } owned) return new(RefusalReason.ViewUnavailable, "the view of Karpetrack's pools and nodes could not be read");
        var pool = w.Pool ?? "";
        var others = owned.NodesOf(pool).Where(n => n.Name != node).Select(n => n.Name).ToList();
        if (others.Count > 0) return new(RefusalReason.PoolHoldsOtherNodes, $"pool {pool} also holds {others[0]}");
        if (owned.Pool(pool) is { Desired: > 1 } sized) return new(RefusalReason.PoolHoldsOtherNodes, $"pool {pool} is sized for {sized.Desired} nodes");
        return null;
    }

    /// <summary>A pool deleted for having no node must have none on the unfiltered view (whatever --node-selector shows).</summary>
    private static Refusal? Unused(SafetyWorld w)
    {
        if (w.Owned is not { } owned) return new(RefusalReason.ViewUnavailable, "the view of Karpetrack's pools and nodes could not be read");
        if (owned.HasNodes(w.Pool ?? "")) return new(RefusalReason.PoolHasNodes, $"pool {w.Pool} has a node");
        return null;
    }

    /// <summary>
    /// A node is uncordoned only if it is managed, its pool is listed and not being deleted (a node that is leaving would
    /// invite pods onto it), and no other operation owns it. <paramref name="op"/> null: a node left annotated by an
    /// interrupted disruption, whose pool is <see cref="SafetyWorld.Pool"/>; else the node's pool is the one the operation read.
    /// </summary>
    private static Refusal? MayUncordon(SafetyOperation? op, SafetyWorld w)
    {
        if (w.Owned is not { } owned) return new(RefusalReason.ViewUnavailable, "the view of Karpetrack's pools and nodes could not be read");
        var node = w.Node ?? "";
        if (op is null && (owned.Nodes.FirstOrDefault(n => n.Name == node) is not { Managed: true } || string.IsNullOrEmpty(w.Pool)))
            return new(RefusalReason.NotManaged, $"{node} is not in a pool of Karpetrack's");
        if (w.Pool is { } pool && owned.Deleting(pool)) return new(RefusalReason.PoolDeleting, $"the pool of {node} is being deleted");
        if (w.OtherOperationNodes.Contains(node)) return new(RefusalReason.OwnedByOperation, $"{node} belongs to an operation in progress");
        return null;
    }
}
