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
        for (int guard = 0; guard < 8 && !op.Ended; guard++)
        {
            var before = op.Stage;
            try
            {
                switch (op.Stage)
                {
                    case OperationStep.CreatePools: await CreatePoolsAsync(op, ct).ConfigureAwait(false); break;
                    case OperationStep.WaitReady: await WaitReadyAsync(op, ct).ConfigureAwait(false); break;
                    case OperationStep.Cordon: await CordonAsync(op, ct).ConfigureAwait(false); break;
                    case OperationStep.Drain: await DrainAsync(op, ct).ConfigureAwait(false); break;
                    case OperationStep.DeletePools: await DeleteOldPoolsAsync(op, ct).ConfigureAwait(false); break;
                }
            }
            catch (Exception e) when (IsTransient(e) && !ct.IsCancellationRequested)
            {
                // The step is retried on the next tick; its own timeout bounds how long.
                if (!op.Ended) Set(op, op.Stage, $"in progress: {TypeOf(op.Stage)} waiting to retry: {e.Message}");
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
            if (Guard(SafetyWrite.CreatePool, op, World(op, null) with { Managed = managed, Adding = ManagedCapacity.Of(pc.Class) }, ct) is { } refused)
            {
                Count(ActionKind.CreatePool, "refused");
                CountRefusal(refused);
                await FailAndCleanUpAsync(op, refused.Message, ct).ConfigureAwait(false);
                return;
            }
            try
            {
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
            Set(op, OperationStep.CreatePools, $"in progress: created {op.Created}/{op.NewPools.Count} pools");
        }
        Set(op, OperationStep.WaitReady, $"in progress: waiting for {op.NewPools.Count} new nodes to be Ready");
    }

    private async Task WaitReadyAsync(Operation op, CancellationToken ct)
    {
        var snap = model.Snapshot();
        var ready = snap.Nodes.Where(n => n.Ready && n.Pool.Length > 0).Select(n => n.Pool).ToHashSet(StringComparer.Ordinal);
        int joined = op.NewPools.Count(p => ready.Contains(p.Pool));
        var now = clock.GetUtcNow();
        OwnedView? owned = null;
        if (joined < op.NewPools.Count
            && (op.Adopted || now - op.Started > options.ProvisioningTimeout || op.ViewAskedAt is not { } asked || now - asked >= options.PoolSweep))
        {
            // The snapshot holds only nodes matching --node-selector, which may hide the new nodes: ask the unfiltered view
            // before calling a pool late, and otherwise once per --pool-sweep (not every tick: a Spot node takes minutes to
            // join), so a provision ends when its nodes are Ready, not at the timeout.
            op.ViewAskedAt = now;
            owned = await ViewAsync(ct).ConfigureAwait(false);
            joined = op.NewPools.Count(p => ready.Contains(p.Pool) || owned.HasReadyNode(p.Pool));
        }
        if (joined == op.NewPools.Count)
        {
            Count(ActionKind.WaitReady, "succeeded");
            // Ready on the unfiltered view only: until the snapshot shows them, the pools stay in flight (a lagging cache
            // must not make the recommender buy for the same pods again).
            if (owned is not null && op.Rec.Type == RecommendationType.Provision)
            {
                var seen = PoolsWithNodes(snap);
                foreach (var (pool, cls) in op.NewPools) Land(pool, cls, owned, seen, op.Started + options.ProvisioningTimeout);
            }
            lock (gate) scaleUps[op.Rec.Id] = clock.GetUtcNow();
            if (op.Rec.Nodes.Count == 0)
            {
                Finish(op, $"succeeded: {joined} new nodes Ready");
                return;
            }
            // Right before the first disruptive step: everything checked again against live state,
            // the window, the cooldown and the disruption budgets included.
            var why = Decide(SafetyWrite.Cordon, new SafetyOperation(op.Rec, op.Stage, op.NewPools.Select(p => p.Pool).ToList()),
                World(op, await ViewAsync(ct).ConfigureAwait(false), NodeIndex.Of(snap).Nodes), ct);
            if (why is not null)
            {
                Count(ActionKind.Cordon, "refused");
                CountRefusal(why);
                await FailAndCleanUpAsync(op, "refused before the drain: " + why.Message, ct).ConfigureAwait(false);
                return;
            }
            Set(op, OperationStep.Cordon, "in progress: new nodes Ready; cordoning");
            return;
        }
        if (clock.GetUtcNow() - op.Started > options.ProvisioningTimeout)
        {
            Count(ActionKind.WaitReady, "failed");
            await FailAndCleanUpAsync(op, $"{op.NewPools.Count - joined} of {op.NewPools.Count} new nodes not Ready after {options.ProvisioningTimeout.TotalMinutes:0} min", ct).ConfigureAwait(false);
            return;
        }
        Set(op, OperationStep.WaitReady, $"in progress: {joined}/{op.NewPools.Count} new nodes Ready");
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
                        // The step goes with it: a restarted Karpetrack takes the drain up where it was.
                        // With the operation's type and saving: it resumes as it was, not as a guess.
                        [DisruptionAnnotation] = new DisruptionRecord(op.Rec.Id, OperationStep.Drain, op.Rec.Type, op.Rec.SavingsPerHour).ToString(),
                        [DisruptionSinceAnnotation] = KubeTime(now),
                    },
                },
                ["spec"] = new JsonObject { ["unschedulable"] = true },
            };
            if (Guard(SafetyWrite.Cordon, op, World(op, null) with { Node = node }, ct) is { } refused)
            {
                Count(ActionKind.Cordon, "refused");
                CountRefusal(refused);
                await FailAndCleanUpAsync(op, refused.Message, ct).ConfigureAwait(false);
                return;
            }
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
        Set(op, OperationStep.Drain, $"in progress: draining {string.Join(", ", op.Rec.Nodes)}");
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
        var world = World(op, null, NodeIndex.Of(model.Snapshot()).Nodes);
        var waiting = new List<string>();
        foreach (var node in op.Rec.Nodes)
        {
            if (op.Drained.Contains(node)) continue;
            // A blocker that appears mid-drain (someone marks a pod or the node do-not-disrupt) wins, even with no pod left to evict.
            if (Decide(SafetyWrite.Evict, new SafetyOperation(op.Rec, op.Stage), world with { Node = node }, ct) is { } blocked)
            {
                await AbandonDrainAsync(op, blocked, ct).ConfigureAwait(false);
                return;
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
                if (op.EvictAgainAt.TryGetValue(key, out var again) && now < again)
                {
                    // A pod evicted or found gone may still be in a lagging cache: the drain waits for it, but does not name it.
                    if (!op.Leaving.Contains(key)) waiting.Add(key);
                    continue;
                }
                if (Guard(SafetyWrite.Evict, op, world with { Node = node }, ct) is { } refused)
                {
                    await AbandonDrainAsync(op, refused, ct).ConfigureAwait(false);
                    return;
                }
                var outcome = await EvictAsync(pod, node, ct).ConfigureAwait(false);
                switch (outcome.Result)
                {
                    case EvictionResult.Evicted or EvictionResult.Gone:
                        op.EvictAgainAt[key] = now + TimeSpan.FromSeconds(30);   // it is terminating; ask again only if it lingers
                        op.Leaving.Add(key);
                        break;
                    case EvictionResult.Blocked:
                        op.Leaving.Remove(key);
                        op.EvictAgainAt[key] = now + (outcome.RetryAfter ?? TimeSpan.FromSeconds(10));
                        waiting.Add($"{key} ({outcome.Message})");
                        break;
                    default:
                        op.Leaving.Remove(key);
                        op.EvictAgainAt[key] = now + TimeSpan.FromSeconds(10);
                        waiting.Add($"{key} ({outcome.Message})");
                        log.LogWarning("actuation: evicting {Pod} failed: {Why}", key, outcome.Message);
                        break;
                }
            }
        }
        if (op.Drained.Count == op.Rec.Nodes.Count)
        {
            Set(op, OperationStep.DeletePools, "in progress: drained; deleting pools");
            return;
        }
        Set(op, OperationStep.Drain, waiting.Count > 0 ? $"in progress: draining; waiting for {string.Join(", ", waiting.Take(3))}" : "in progress: draining");
    }

    private async Task AbandonDrainAsync(Operation op, Refusal why, CancellationToken ct)
    {
        Count(ActionKind.Drain, "failed");
        CountRefusal(why);
        await FailAndCleanUpAsync(op, why.Message + "; uncordoned", ct).ConfigureAwait(false);
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
        // At least a second: a pod whose own grace period is 0 (or a sub-second cap) still gets a graceful stop, never a force delete.
        var grace = Math.Max(1, Math.Min(live.Spec?.TerminationGracePeriodSeconds ?? 30, (long)options.MaxGracePeriod.TotalSeconds));
        // The UID goes along so that the API server evicts this pod only, never one that took its name meanwhile.
        return await kube!.EvictPodAsync(pod.Namespace, pod.Name, uid, grace, ct).ConfigureAwait(false);
    }

    private async Task DeleteOldPoolsAsync(Operation op, CancellationToken ct)
    {
        foreach (var (node, pool) in op.OldPools)
        {
            // The last word before a pool goes (SafetyPolicy): its node runs nothing but DaemonSet and mirror pods and pods
            // already evicted, and the unfiltered view shows the pool holding this node only, sized for one.
            var running = model.PodsOn(node).Where(p => !p.IsOverhead && !p.Terminating).Select(p => p.Namespace + "/" + p.Name).ToList();
            var owned = running.Count == 0 ? await LoadViewAsync(ct).ConfigureAwait(false) : null;
            if (Guard(SafetyWrite.DeletePool, op, World(op, owned) with { Node = node, Pool = pool, RunningPods = running }, ct) is { } why)
            {
                Count(ActionKind.DeletePool, "refused");
                CountRefusal(why);
                if (why.Reason == RefusalReason.PodsNotEvicted)
                {
                    op.Drained.Remove(node);
                    Set(op, OperationStep.Drain, $"in progress: {node} runs {running[0]} again; draining");
                }
                else await FailAndCleanUpAsync(op, why.Message + "; uncordoned", ct).ConfigureAwait(false);
                return;
            }
            try
            {
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
            if (Guard(SafetyWrite.Uncordon, op, World(op, owned) with { Node = node, Pool = op.OldPools.GetValueOrDefault(node) }, ct) is not null) continue;
            try
            {
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
            if (Guard(SafetyWrite.DeleteUnusedPool, op, World(op, owned) with { Pool = pool }, ct) is not null) continue;
            try
            {
                await spot!.DeleteNodePoolAsync(pool, ct).ConfigureAwait(false);
                Count(ActionKind.DeletePool, "succeeded");
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                log.LogError("actuation: could not delete pool {Pool} after a failure: {Error}; the pool sweep retries", pool, e.Message);
            }
        }
        op.State = "failed: " + why;
        lock (gate) op.MoveTo(OperationStep.Failed);
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
        lock (gate) op.MoveTo(OperationStep.Done);
        log.LogInformation("actuation: {Id} ({Type}) {State}", op.Rec.Id, op.Rec.Type, state);
    }

    private void Set(Operation op, OperationStep stage, string state)
    {
        lock (gate)
        {
            if (op.Stage != stage) op.StageSince = clock.GetUtcNow();
            op.MoveTo(stage);
            op.State = state;
        }
    }
}
