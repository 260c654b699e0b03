namespace Karpetrack;

/// <summary>Why the safety checks refused an action. The metric label of each is stable (see <see cref="Refusal.LabelOf"/>).</summary>
public enum RefusalReason
{
    CachesUnsynced,
    PriceBookStale,
    CircuitOpen,
    PlanTooOld,
    OutsideWindow,
    ScaleUpCooldown,
    MaxDisruptedNodes,
    HourlyBudget,
    PoolDeleting,
    OwnedByOperation,
    NodeTooYoung,
    Blocked,
    NodeGone,
    /// <summary>The node is not Ready, cordoned by someone else, or being deleted.</summary>
    NodeNotReady,
    SavesNothing,
    PoolHoldsOtherNodes,
    ManagedCapacityLimit,
    SavingBelowThreshold,
    NoPrice,
    PodsNotEvicted,
    /// <summary>A pool the operation bought lost its bid (pre-empted) before the operation was through.</summary>
    PoolPreempted,
    /// <summary>The leadership term ended: no write at all (the tick is cancelled, never counted).</summary>
    LeaseLost,
    /// <summary>A cache synced once but has been out of touch with the API server (no watch, no list) past the limit.</summary>
    CachesStale,
    // Skips of clean-up writes (an uncordon, the DELETE of a pool without a node): not counted, the pool sweep tries again.
    ViewUnavailable,
    PoolHasNodes,
    NotManaged,
}

/// <summary>A refusal decided by a safety check: its typed reason and the text that explains it (logged and shown as the state).</summary>
public sealed record Refusal(RefusalReason Reason, string Message)
{
    /// <summary>The label of karpetrack_actuation_refusals_total{reason}.</summary>
    public string Label => LabelOf(Reason);

    public static string LabelOf(RefusalReason reason) => reason switch
    {
        RefusalReason.CachesUnsynced => "caches_unsynced",
        RefusalReason.PriceBookStale => "price_book_stale",
        RefusalReason.CircuitOpen => "circuit_open",
        RefusalReason.PlanTooOld => "plan_too_old",
        RefusalReason.OutsideWindow => "outside_window",
        RefusalReason.ScaleUpCooldown => "scale_up_cooldown",
        RefusalReason.MaxDisruptedNodes => "max_disrupted_nodes",
        RefusalReason.HourlyBudget => "hourly_budget",
        RefusalReason.PoolDeleting => "pool_deleting",
        RefusalReason.OwnedByOperation => "owned_by_operation",
        RefusalReason.NodeTooYoung => "node_too_young",
        RefusalReason.Blocked => "blocked",
        RefusalReason.NodeGone => "node_gone",
        RefusalReason.NodeNotReady => "node_not_ready",
        RefusalReason.SavesNothing => "saves_nothing",
        RefusalReason.PoolHoldsOtherNodes => "pool_holds_other_nodes",
        RefusalReason.ManagedCapacityLimit => "managed_capacity_limit",
        RefusalReason.SavingBelowThreshold => "saving_below_threshold",
        RefusalReason.NoPrice => "no_price",
        RefusalReason.PodsNotEvicted => "pods_not_evicted",
        RefusalReason.PoolPreempted => "pool_preempted",
        RefusalReason.LeaseLost => "lease_lost",
        RefusalReason.CachesStale => "caches_stale",
        RefusalReason.ViewUnavailable => "view_unavailable",
        RefusalReason.PoolHasNodes => "pool_has_nodes",
        RefusalReason.NotManaged => "not_managed",
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, "a refusal reason without a label"),
    };

    public override string ToString() => Message;
}
