using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>The actuator's steps: create pools, wait for Ready, cordon, drain with the Eviction API, delete the old pools, and the clean-up of a failed operation.</summary>
public sealed partial class Actuator
{
    private async Task AdvanceAsync(Operation op, CancellationToken ct)
    {
        // Each step either finishes and moves on in the same pass, or waits for the next tick.
        for (int guard = 0; guard < 8 && op.Stage is not (Stage.Done or Stage.Failed); guard++)
        {
            var before = op.Stage;
            try
            {
                switch (op.Stage)
                {
                    case Stage.CreatePools: await CreatePoolsAsync(op, ct).ConfigureAwait(false); break;
                    case Stage.WaitReady: await WaitReadyAsync(op, ct).ConfigureAwait(false); break;
                    case Stage.Cordon: await CordonAsync(op, ct).ConfigureAwait(false); break;
                    case Stage.Drain: await DrainAsync(op, ct).ConfigureAwait(false); break;
                    case Stage.DeletePools: await DeleteOldPoolsAsync(op, ct).ConfigureAwait(false); break;
                }
            }
            catch (Exception e) when (IsTransient(e) && !ct.IsCancellationRequested)
            {
                // The step is retried on the next tick; its own timeout bounds how long.
                Set(op, op.Stage, $"in progress: {TypeOf(op.Stage)} waiting to retry: {e.Message}");
                log.LogWarning("actuation: {Id} {Step} will be retried: {Error}", op.Rec.Id, TypeOf(op.Stage), e.Message);
                return;
            }
            if (op.Stage == before) return;
        }
    }

    private static bool IsTransient(Exception e) => e switch
    {
        SpotApiException s => s.Reason is "network" or "timeout" or "circuit_open" || s.StatusCode is 429 or >= 500,
        KubeApiException k => k.StatusCode is 429 or 409 or >= 500,
        // KubeConfigException: the exec plugin could not give a credential now; it may later.
        HttpRequestException or TimeoutException or TaskCanceledException or IOException or KubeConfigException => true,
        _ => false,
    };

    /// <summary>
    /// The capacity Karpetrack's pools hold now, on a fresh unfiltered list (this operation's pools created so far and
    /// pools still being deleted included): what --max-managed-cpu and --max-managed-memory limit.
    /// </summary>
    private async Task<ManagedCapacity> ManagedCapacityAsync(PriceBook book, CancellationToken ct)
    {
        var view = await LoadViewAsync(ct).ConfigureAwait(false);
        var total = ManagedCapacity.Zero;
        foreach (var p in view.Pools.Where(p => p.IsManaged))
            if (book.Classes.TryGetValue(p.ServerClass, out var c)) total += ManagedCapacity.Of(c.Class, Math.Max(1, p.Desired));
        return total;
    }

    private async Task CreatePoolsAsync(Operation op, CancellationToken ct)
    {
        var book = prices.Current;
        ManagedCapacity? managed = null;
        while (op.Created < op.NewPools.Count)
        {
            var (pool, cls) = op.NewPools[op.Created];
            if (!book.Classes.TryGetValue(cls, out var pc) || options.Bids.Bid(pc.Prices) is not { } bid)
            {
                Count(ActionKind.CreatePool, "failed");
                await FailAndCleanUpAsync(op, $"no bid for {cls} within the policy (cap {options.Bids.Cap?.ToString(CultureInfo.InvariantCulture) ?? "none"})", ct).ConfigureAwait(false);
                return;
            }
            var labels = options.Pools.PoolLabels(new Dictionary<string, string>(StringComparer.Ordinal)
            {
                [ManagedLabel] = "true",
                [CategoryLabel] = pc.Class.Category,
                [RecommendationLabel] = op.Rec.Id,
            });
            // One fresh list per pass; the pools this pass creates are added as they go, not re-listed.
            if (options.Pools.LimitsCapacity) managed ??= await ManagedCapacityAsync(book, ct).ConfigureAwait(false);
            if (managed is { } now && options.Pools.CheckCreate(now, ManagedCapacity.Of(pc.Class)) is { } limit)
            {
                Count(ActionKind.CreatePool, "refused");
                CountRefusal(new Refusal(RefusalReason.ManagedCapacityLimit, limit));
                await FailAndCleanUpAsync(op, limit, ct).ConfigureAwait(false);
                return;
            }
            try
            {
                Fence(ct);
                var created = await spot!.CreateNodePoolAsync(new SpotNodePoolSpec(pool, cls, 1, bid, options.Cloudspace, labels,
                    options.Pools.Taints.Count > 0 ? options.Pools.Taints : null), options.Bids.Cap, ct).ConfigureAwait(false);
                Count(ActionKind.CreatePool, "succeeded");
                Audit("SpotNodePool", pool, "PoolCreated", $"created Spot pool {pool} ({cls}, bid {created.BidPrice}) for {op.Rec.Id}", "Normal", ct);
            }
            catch (SpotApiException e) when (!IsTransient(e))
            {
                Count(ActionKind.CreatePool, "failed");
                await FailAndCleanUpAsync(op, $"the Spot API refused pool {pool} ({cls}): {e.ServerMessage ?? e.Message}", ct).ConfigureAwait(false);
                return;
            }
            op.Created++;
            if (managed is { } held) managed = held + ManagedCapacity.Of(pc.Class);
            lock (gate) scaleUps[op.Rec.Id] = clock.GetUtcNow();
            Set(op, Stage.CreatePools, $"in progress: created {op.Created}/{op.NewPools.Count} pools");
        }
        Set(op, Stage.WaitReady, $"in progress: waiting for {op.NewPools.Count} new nodes to be Ready");
    }

    private async Task WaitReadyAsync(Operation op, CancellationToken ct)
    {
        var snap = model.Snapshot();
        var ready = snap.Nodes.Where(n => n.Ready && n.Pool.Length > 0).Select(n => n.Pool).ToHashSet(StringComparer.Ordinal);
        int joined = op.NewPools.Count(p => ready.Contains(p.Pool));
        if (joined < op.NewPools.Count && (op.Adopted || clock.GetUtcNow() - op.Started > options.ProvisioningTimeout))
        {
            // The snapshot holds only nodes matching --node-selector: before calling a pool late (or an
            // adopted one joined), ask the unfiltered view.
            var owned = await ViewAsync(ct).ConfigureAwait(false);
            joined = op.NewPools.Count(p => ready.Contains(p.Pool) || owned.HasReadyNode(p.Pool));
        }
        if (joined == op.NewPools.Count)
        {
            Count(ActionKind.WaitReady, "succeeded");
            lock (gate) scaleUps[op.Rec.Id] = clock.GetUtcNow();
            if (op.Rec.Nodes.Count == 0)
            {
                Finish(op, $"succeeded: {joined} new nodes Ready");
                return;
            }
            // Right before the first disruptive step: everything checked again against live state,
            // the window, the cooldown and the disruption budgets included.
            var book = prices.Current;
            var why = GlobalRefusal() ?? BudgetRefusal(op.Rec, snap.Nodes.Count(), await ViewAsync(ct).ConfigureAwait(false), op)
                ?? (BuysNodes(op.Rec) ? SavingsShortfall(op.Rec, book) : null)
                ?? op.Rec.Nodes.Select(n => snap.Nodes.FirstOrDefault(v => v.Name == n) is { } v
                    ? (LiveBlockers(v, book).FirstOrDefault() is { } b ? new Refusal(RefusalReason.Blocked, $"{n} is blocked: {b.Reason}") : null)
                    : new Refusal(RefusalReason.NodeGone, $"{n} is gone")).FirstOrDefault(x => x is not null);
            if (why is not null)
            {
                Count(ActionKind.Cordon, "refused");
                CountRefusal(why);
                await FailAndCleanUpAsync(op, "refused before the drain: " + why.Message, ct).ConfigureAwait(false);
                return;
            }
            Set(op, Stage.Cordon, "in progress: new nodes Ready; cordoning");
            return;
        }
        if (clock.GetUtcNow() - op.Started > options.ProvisioningTimeout)
        {
            Count(ActionKind.WaitReady, "failed");
            await FailAndCleanUpAsync(op, $"{op.NewPools.Count - joined} of {op.NewPools.Count} new nodes not Ready after {options.ProvisioningTimeout.TotalMinutes:0} min", ct).ConfigureAwait(false);
            return;
        }
        Set(op, Stage.WaitReady, $"in progress: {joined}/{op.NewPools.Count} new nodes Ready");
    }

    private async Task CordonAsync(Operation op, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        foreach (var node in op.Rec.Nodes)
        {
            if (op.Cordoned.Contains(node)) continue;
            var patch = new JsonObject
            {
                ["metadata"] = new JsonObject
                {
                    ["annotations"] = new JsonObject
                    {
                        [DisruptionAnnotation] = op.Rec.Id,
                        [DisruptionSinceAnnotation] = KubeTime(now),
                    },
                },
                ["spec"] = new JsonObject { ["unschedulable"] = true },
            };
            Fence(ct);
            try { await kube!.PatchNodeAsync(node, patch, ct).ConfigureAwait(false); }
            catch (KubeApiException e) when (e.StatusCode == 404)
            {
                Count(ActionKind.Cordon, "failed");
                await FailAndCleanUpAsync(op, $"{node} is gone", ct).ConfigureAwait(false);
                return;
            }
            op.Cordoned.Add(node);
            lock (gate) disruptions.Add(now);
            Count(ActionKind.Cordon, "succeeded");
            Audit("Node", node, "Cordoned", $"cordoned for {op.Rec.Id} ({op.Rec.Type})", "Normal", ct);
        }
        Set(op, Stage.Drain, $"in progress: draining {string.Join(", ", op.Rec.Nodes)}");
    }

    private async Task DrainAsync(Operation op, CancellationToken ct)
    {
        var now = clock.GetUtcNow();
        if (now - op.StageSince > options.DrainTimeout)
        {
            Count(ActionKind.Drain, "failed");
            await FailAndCleanUpAsync(op, $"the drain did not finish in {options.DrainTimeout.TotalMinutes:0.#} min; uncordoned", ct).ConfigureAwait(false);
            return;
        }
        var snap = model.Snapshot();
        var book = prices.Current;
        var waiting = new List<string>();
        foreach (var node in op.Rec.Nodes)
        {
            if (op.Drained.Contains(node)) continue;
            // A blocker that appears mid-drain (someone marks a pod or the node do-not-disrupt) wins.
            if (snap.Nodes.FirstOrDefault(n => n.Name == node) is { } view)
            {
                var blocked = Recommender.NodeBlockers(view, model.PodsOn(node), [], book)
                    .FirstOrDefault(b => b.Reason is BlockerReasons.NodeDoNotDisrupt or BlockerReasons.NodeScaleDownDisabled or BlockerReasons.PodDoNotDisrupt or BlockerReasons.PodSafeToEvictFalse);
                if (blocked is not null)
                {
                    Count(ActionKind.Drain, "failed");
                    await FailAndCleanUpAsync(op, $"{node} became blocked during the drain ({blocked.Reason}); uncordoned", ct).ConfigureAwait(false);
                    return;
                }
            }
            var left = model.PodsOn(node).Where(p => !p.IsOverhead).ToList();
            if (left.Count == 0)
            {
                op.Drained.Add(node);
                Count(ActionKind.Drain, "succeeded");
                Audit("Node", node, "Drained", $"drained for {op.Rec.Id}", "Normal", ct);
                continue;
            }
            foreach (var pod in left.Where(p => !p.Terminating))
            {
                var key = pod.Namespace + "/" + pod.Name;
                if (op.EvictAgainAt.TryGetValue(key, out var again) && now < again) { waiting.Add(key); continue; }
                Fence(ct);
                var outcome = await EvictAsync(pod, node, ct).ConfigureAwait(false);
                switch (outcome.Result)
                {
                    case EvictionResult.Evicted or EvictionResult.Gone:
                        op.EvictAgainAt[key] = now + TimeSpan.FromSeconds(30);   // it is terminating; ask again only if it lingers
                        break;
                    case EvictionResult.Blocked:
                        op.EvictAgainAt[key] = now + (outcome.RetryAfter ?? TimeSpan.FromSeconds(10));
                        waiting.Add($"{key} ({outcome.Message})");
                        break;
                    default:
                        op.EvictAgainAt[key] = now + TimeSpan.FromSeconds(10);
                        waiting.Add($"{key} ({outcome.Message})");
                        log.LogWarning("actuation: evicting {Pod} failed: {Why}", key, outcome.Message);
                        break;
                }
            }
        }
        if (op.Drained.Count == op.Rec.Nodes.Count)
        {
            Set(op, Stage.DeletePools, "in progress: drained; deleting pools");
            return;
        }
        Set(op, Stage.Drain, waiting.Count > 0 ? $"in progress: draining; waiting for {string.Join(", ", waiting.Take(3))}" : "in progress: draining");
    }

    private async Task<EvictionOutcome> EvictAsync(PodFacts pod, string node, CancellationToken ct)
    {
        // The pod's own grace period, up to the cap: a drain never cuts a shutdown short, nor waits forever.
        var live = await kube!.ReadPodAsync(pod.Namespace, pod.Name, ct).ConfigureAwait(false);
        if (live?.Metadata?.Uid is not { Length: > 0 } uid) return new EvictionOutcome(EvictionResult.Gone, "already gone", null);
        // A new pod under the old name (a StatefulSet's) is not the one the plan was made for.
        if (Json.UidOf(uid) != pod.Uid) return new EvictionOutcome(EvictionResult.Gone, "already gone (replaced by a new pod of the same name)", null);
        // Only a pod bound to the node being drained: a lagging cache never sends an eviction to another node's pod.
        if (live.Spec?.NodeName != node) return new EvictionOutcome(EvictionResult.Gone, $"no longer on {node}", null);
        var grace = Math.Min(live.Spec?.TerminationGracePeriodSeconds ?? 30, (long)options.MaxGracePeriod.TotalSeconds);
        // The UID goes along so that the API server evicts this pod only, never one that took its name meanwhile.
        return await kube!.EvictPodAsync(pod.Namespace, pod.Name, uid, grace, ct).ConfigureAwait(false);
    }

    private async Task DeleteOldPoolsAsync(Operation op, CancellationToken ct)
    {
        foreach (var (node, pool) in op.OldPools)
        {
            // The last word before a pool goes: its node runs nothing but DaemonSet and mirror pods and
            // pods already evicted (terminating).
            var running = model.PodsOn(node).Where(p => !p.IsOverhead && !p.Terminating).Select(p => p.Namespace + "/" + p.Name).ToList();
            if (running.Count > 0)
            {
                op.Drained.Remove(node);
                Count(ActionKind.DeletePool, "refused");
                CountRefusal(new Refusal(RefusalReason.PodsNotEvicted, $"{node} runs {running[0]}"));
                Set(op, Stage.Drain, $"in progress: {node} runs {running[0]} again; draining");
                return;
            }
            // On the unfiltered view: the pool holds this node only (a second node, hidden by --node-selector or
            // joined since the plan, would go with it undrained) and is sized for one.
            var owned = await LoadViewAsync(ct).ConfigureAwait(false);
            var others = owned.NodesOf(pool).Where(n => n.Name != node).Select(n => n.Name).ToList();
            if (others.Count > 0 || owned.Pool(pool) is { Desired: > 1 })
            {
                var why = new Refusal(RefusalReason.PoolHoldsOtherNodes, others.Count > 0 ? $"pool {pool} also holds {others[0]}" : $"pool {pool} is sized for {owned.Pool(pool)!.Desired} nodes");
                Count(ActionKind.DeletePool, "refused");
                CountRefusal(why);
                await FailAndCleanUpAsync(op, why.Message + "; uncordoned", ct).ConfigureAwait(false);
                return;
            }
            try
            {
                Fence(ct);
                await spot!.DeleteNodePoolAsync(pool, ct).ConfigureAwait(false);
            }
            catch (SpotApiException e) when (!IsTransient(e))
            {
                Count(ActionKind.DeletePool, "failed");
                await FailAndCleanUpAsync(op, $"the Spot API refused to delete pool {pool} of {node}: {e.ServerMessage ?? e.Message}; uncordoned", ct).ConfigureAwait(false);
                return;
            }
            Count(ActionKind.DeletePool, "succeeded");
            Audit("Node", node, "PoolDeleted", $"deleted Spot pool {pool} for {op.Rec.Id}", "Normal", ct);
        }
        op.OldPools.Clear();
        decimal saved = op.Rec.SavingsPerHour;
        Finish(op, $"succeeded: removed {string.Join(", ", op.Rec.Nodes)}{(op.NewPools.Count > 0 ? $" for {op.NewPools.Count} new nodes" : "")}, saving {saved:0.####} $/h");
    }

    /// <summary>Ends an operation that cannot go on: nodes it cordoned are uncordoned, pools it created and that got no node are deleted.</summary>
    private async Task FailAndCleanUpAsync(Operation op, string why, CancellationToken ct)
    {
        OwnedView? owned = null;
        try { owned = await LoadViewAsync(ct).ConfigureAwait(false); }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            log.LogWarning("actuation: the view of Karpetrack's pools and nodes could not be read: {Error}; the sweep cleans up later", e.Message);
        }
        foreach (var node in op.Cordoned.ToList())
        {
            // A node whose pool is being deleted is leaving: uncordoning it would invite pods onto it.
            if (owned is null || (op.OldPools.TryGetValue(node, out var oldPool) && owned.Deleting(oldPool))) continue;
            try
            {
                Fence(ct);
                await Uncordon(node, ct).ConfigureAwait(false);
                op.Cordoned.Remove(node);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The annotation stays, so the recovery pass rolls it back later.
                log.LogError("actuation: could not uncordon {Node}: {Error}", node, e.Message);
            }
        }
        // Pools that got a node are kept (for replacements after the drain was refused: the next plans
        // consolidate them if they are not needed). Pools still without any node, by the unfiltered view, go.
        foreach (var (pool, _) in op.NewPools.Take(op.Created))
        {
            if (owned is null || owned.HasNodes(pool)) continue;
            try
            {
                Fence(ct);
                await spot!.DeleteNodePoolAsync(pool, ct).ConfigureAwait(false);
                Count(ActionKind.DeletePool, "succeeded");
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                log.LogError("actuation: could not delete pool {Pool} after a failure: {Error}; the pool sweep retries", pool, e.Message);
            }
        }
        op.State = "failed: " + why;
        lock (gate) op.Stage = Stage.Failed;
        log.LogWarning("actuation: {Id} ({Type}) failed: {Why}", op.Rec.Id, op.Rec.Type, why);
        if (op.Rec.Nodes.Count > 0) Audit("Node", op.Rec.Nodes[0], "ActionFailed", $"{op.Rec.Id}: {why}", "Warning", ct);
        else Audit("SpotNodePool", op.NewPools.FirstOrDefault().Pool ?? op.Rec.Id, "ActionFailed", $"{op.Rec.Id}: {why}", "Warning", ct);
    }

    private Task<V1Node> Uncordon(string node, CancellationToken ct) =>
        kube!.PatchNodeAsync(node, new JsonObject
        {
            ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [DisruptionAnnotation] = null, [DisruptionSinceAnnotation] = null } },
            ["spec"] = new JsonObject { ["unschedulable"] = null },
        }, ct);

    private void Finish(Operation op, string state)
    {
        op.State = state;
        lock (gate) op.Stage = Stage.Done;
        log.LogInformation("actuation: {Id} ({Type}) {State}", op.Rec.Id, op.Rec.Type, state);
    }

    private void Set(Operation op, Stage stage, string state)
    {
        lock (gate)
        {
            if (op.Stage != stage) op.StageSince = clock.GetUtcNow();
            op.Stage = stage;
            op.State = state;
        }
    }
}
