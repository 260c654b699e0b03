using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>The actuator's recovery after a start or a new leadership term, and the periodic pool sweep.</summary>
public sealed partial class Actuator
{
    /// <summary>
    /// After a start or a new leadership: pools of earlier runs still waiting for their node are
    /// adopted (so their pending pods are not provisioned again), and nodes left cordoned by an
    /// interrupted drain are uncordoned (the recommendation comes back and is carried out anew).
    /// </summary>
    private async Task RecoverAsync(CancellationToken ct)
    {
        var owned = await LoadViewAsync(ct).ConfigureAwait(false);
        int adopted = 0;
        // Ownership on the unfiltered view: a pool with any node (whatever --node-selector shows) is not
        // waiting for one, and a pool being deleted is not adopted.
        foreach (var p in owned.Pools.Where(p => p.IsManaged && !owned.HasNodes(p.Name) && !IsLost(p) && !p.Deleting))
        {
            var id = p.CustomLabels.GetValueOrDefault(RecommendationLabel) ?? p.Name;
            lock (gate)
            {
                if (ops.Values.Any(o => o.NewPools.Any(x => x.Pool == p.Name))) continue;
                if (!ops.TryGetValue(id, out var op))
                {
                    var rec = new Recommendation(id, RecommendationType.Provision, [], [new NewNode(p.ServerClass, 1, 0)], [], [], 0, 0, 0, 0, -1,
                        ["adopted after a restart"]);
                    // Dated from the adoption, never from the pool's creation: the provisioning timeout is not
                    // already past for a pool of a run that ended long ago.
                    op = new Operation(rec, clock.GetUtcNow()) { State = "in progress: adopted; waiting for the node", Adopted = true };
                    op.MoveTo(OperationStep.WaitReady);
                    ops[id] = op;
                }
                op.NewPools.Add((p.Name, p.ServerClass));
                op.Created = op.NewPools.Count;
                adopted++;
            }
        }
        // Pools whose node the unfiltered view shows and this process's snapshot not yet (its caches lag): in flight until it
        // does, or --provisioning-timeout after the pool was created, so the first plans after a restart do not buy again.
        var seen = PoolsWithNodes(model.Snapshot());
        foreach (var p in owned.Pools.Where(p => p.IsManaged && owned.HasNodes(p.Name) && !IsLost(p) && !p.Deleting))
            Land(p.Name, p.ServerClass, owned, seen, (p.Created ?? clock.GetUtcNow()) + options.ProvisioningTimeout);
        int resumed = ResumeDrains(owned);
        int rolledBack = await RollBackOrphansAsync(owned, ct).ConfigureAwait(false);
        if (adopted + resumed + rolledBack > 0)
            log.LogInformation("actuation: recovered {Adopted} pools in flight, resumed {Resumed} drains and rolled back {RolledBack} interrupted drains",
                adopted, resumed, rolledBack);
        await DeleteLostAsync(owned, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Drains the cluster records with their step (the disruption annotation) are taken up where they were: the same
    /// nodes and pools, the recommendation's new pools, and the drain timeout counted from the cordon, so a drain past it
    /// is rolled back at once. Values without a step (an earlier release) are rolled back as before; nodes whose pool is
    /// being deleted are leaving and left alone.
    /// </summary>
    private int ResumeDrains(OwnedView owned)
    {
        int resumed = 0;
        var recorded = owned.Nodes.Where(n => n.Disruption is not null && n.Managed && n.Pool.Length > 0 && !owned.Deleting(n.Pool))
            .Select(n => (Node: n, Record: ReadRecord(n.Name, n.Disruption!)))
            .Where(x => x.Record.Step == OperationStep.Drain)
            .GroupBy(x => x.Record.RecommendationId, StringComparer.Ordinal);
        foreach (var g in recorded)
        {
            var nodes = g.Select(x => x.Node).ToList();
            var newPools = owned.Pools.Where(p => p.IsManaged && p.CustomLabels.GetValueOrDefault(RecommendationLabel) == g.Key && nodes.All(n => n.Pool != p.Name))
                .Select(p => (p.Name, p.ServerClass)).ToList();
            // The type and the saving as recorded with the cordon; a value of the release before, which has neither, has
            // its type inferred (new pools: a replacement) and its saving unknown.
            var first = g.First().Record;
            var type = first.Type ?? (newPools.Count > 0 ? RecommendationType.Replace : RecommendationType.Consolidate);
            decimal saving = first.Saving ?? 0;
            var rec = new Recommendation(g.Key, type, nodes.Select(n => n.Name).ToList(),
                newPools.GroupBy(p => p.ServerClass).Select(c => new NewNode(c.Key, c.Count(), 0)).ToList(), [], [], saving, 0, 0, 0, -1,
                [first.Saving is null ? "resumed after a restart (saving not recorded)" : "resumed after a restart"]);
            var since = nodes.Min(n => n.DisruptionSince) ?? clock.GetUtcNow();
            lock (gate)
            {
                if (ops.ContainsKey(g.Key) || ops.Values.Any(o => o.Rec.Nodes.Any(rec.Nodes.Contains))) continue;
                var op = new Operation(rec, since) { State = "in progress: resumed after a restart; draining", Adopted = true };
                op.NewPools.AddRange(newPools);
                op.Created = newPools.Count;
                foreach (var n in nodes)
                {
                    op.OldPools[n.Name] = n.Pool;
                    op.Cordoned.Add(n.Name);
                }
                op.MoveTo(OperationStep.Drain);
                op.StageSince = since;
                ops[g.Key] = op;
                resumed++;
            }
        }
        return resumed;
    }

    /// <summary>The disruption annotation of a node; a malformed value is refused with a log line and read as an earlier release's (no step: rolled back).</summary>
    private DisruptionRecord ReadRecord(string node, string value)
    {
        if (DisruptionRecord.TryParse(value, out var record, out var error)) return record;
        log.LogWarning("actuation: {Node}: the {Annotation} annotation \"{Value}\" is malformed ({Error}); refused, and read as an earlier release's value naming {Id} with no step (the disruption is rolled back)",
            node, DisruptionAnnotation, value, error, record.RecommendationId);
        return record;
    }

    private async Task SweepAsync(CancellationToken ct)
    {
        var owned = await LoadViewAsync(ct).ConfigureAwait(false);
        // A pool no longer listed, or being deleted, will show no node.
        lock (gate)
            foreach (var pool in landing.Keys.Where(owned.Deleting).ToList()) landing.Remove(pool);
        await RollBackOrphansAsync(owned, ct).ConfigureAwait(false);
        await DeleteLostAsync(owned, ct).ConfigureAwait(false);
    }

    /// <summary>The unfiltered view, read once per tick and shared by the steps of that tick.</summary>
    private async Task<OwnedView> ViewAsync(CancellationToken ct) => tickView ??= await LoadViewAsync(ct).ConfigureAwait(false);

    private async Task<OwnedView> LoadViewAsync(CancellationToken ct) =>
        tickView = await OwnedView.LoadAsync(kube!, spot!, options.Cloudspace, ct).ConfigureAwait(false);

    /// <summary>
    /// Nodes carrying the disruption annotation that no operation of ours is working on (a drain cut
    /// short by a crash, a lost leadership, or an uncordon that failed) are uncordoned, unless their
    /// pool is already deleted and they are leaving: no node stays cordoned by Karpetrack for good.
    /// </summary>
    private async Task<int> RollBackOrphansAsync(OwnedView owned, CancellationToken ct)
    {
        int rolledBack = 0;
        foreach (var n in owned.Nodes.Where(n => n.Disruption is not null))
        {
            // Only a managed node, whose pool is listed and not being deleted, that no operation owns.
            HashSet<string> owners;
            lock (gate) owners = ops.Values.SelectMany(o => o.Rec.Nodes).ToHashSet(StringComparer.Ordinal);
            if (Guard(SafetyWrite.Uncordon, null, World(null, owned) with { Node = n.Name, Pool = n.Pool, OtherOperationNodes = owners }, ct) is not null) continue;
            await Uncordon(n.Name, ct).ConfigureAwait(false);
            rolledBack++;
            log.LogInformation("actuation: uncordoned {Node}: the disruption for {Id} was interrupted", n.Name, n.Disruption);
            Audit("Node", n.Name, "DisruptionRolledBack", $"uncordoned: the disruption for {n.Disruption} was interrupted", "Normal", ct);
        }
        return rolledBack;
    }

    /// <summary>Pre-emption: a pool whose bid was lost is deleted once its nodes are gone; its pods come back as pending demand.</summary>
    private async Task DeleteLostAsync(OwnedView owned, CancellationToken ct)
    {
        foreach (var p in owned.Pools.Where(p => p.IsManaged && IsLost(p) && !p.Deleting))
        {
            if (Guard(SafetyWrite.DeleteUnusedPool, null, World(null, owned) with { Pool = p.Name }, ct) is not null) continue;
            await spot!.DeleteNodePoolAsync(p.Name, ct).ConfigureAwait(false);
            Count(ActionKind.DeletePool, "succeeded");
            log.LogInformation("actuation: deleted pre-empted pool {Pool} ({Class}, bid {Bid}); its pods are pending demand again", p.Name, p.ServerClass, p.BidPrice);
            Audit("SpotNodePool", p.Name, "PoolPreempted", $"deleted pre-empted Spot pool {p.Name} ({p.ServerClass}, bid {p.BidPrice})", "Warning", ct);
            List<Operation> hit;
            lock (gate) landing.Remove(p.Name);
            lock (gate) hit = ops.Values.Where(o => !o.Ended && o.NewPools.Any(x => x.Pool == p.Name)).ToList();
            foreach (var op in hit)
            {
                Count(ActionKind.WaitReady, "failed");
                var why = new Refusal(RefusalReason.PoolPreempted, $"pool {p.Name} lost its bid before its node was Ready");
                CountRefusal(why);
                await FailAndCleanUpAsync(op, why.Message, ct).ConfigureAwait(false);
            }
        }
    }

    private static bool IsLost(SpotNodePool p) => SafetyPolicy.IsLost(p);

    private static HashSet<string> PoolsWithNodes(ClusterSnapshot snap) =>
        snap.Nodes.Where(n => n.Pool.Length > 0).Select(n => n.Pool).ToHashSet(StringComparer.Ordinal);
}
