namespace Karpetrack;

/// <summary>The actuator's side of the safety policy: the world read for a check, and the check itself before every write.</summary>
public sealed partial class Actuator
{
    private readonly SafetyPolicy policy;
    private static readonly Dictionary<string, NodeView> NoNodes = new(StringComparer.Ordinal);

    /// <summary>
    /// The world as the actuator knows it now, for a write of <paramref name="self"/> (null: of no operation):
    /// the inputs' health, the budgets' state, the unfiltered view <paramref name="owned"/> and the snapshot's <paramref name="nodes"/>.
    /// The caller adds the write's target.
    /// </summary>
    private SafetyWorld World(Operation? self, OwnedView? owned, IReadOnlyDictionary<string, NodeView>? nodes = null)
    {
        var now = clock.GetUtcNow();
        var book = prices.Current;
        nodes ??= NoNodes;
        var snapshotNodes = nodes;
        var limits = thresholds();
        lock (gate)
        {
            // Expired entries go, so the maps stay bounded; the policy decides on what is left.
            foreach (var id in scaleUps.Where(kv => now - kv.Value >= options.ScaleUpCooldown).Select(kv => kv.Key).ToList()) scaleUps.Remove(id);
            disruptions.RemoveAll(t => now - t > TimeSpan.FromHours(1));
            return new SafetyWorld
            {
                Now = now,
                CachesSynced = caches.All(c => c.Synced),
                StaleCaches = caches.Where(c => c.Synced && !c.InTouch(ActuationOptions.CacheOutOfTouchLimit)).Select(c => c.Resource).ToList(),
                PriceBookStale = prices.Stale,
                CircuitOpen = spot is { CircuitOpen: true },
                PlanAt = planAt,
                ScaleUps = new Dictionary<string, DateTimeOffset>(scaleUps, StringComparer.Ordinal),
                OtherOperationNodes = ops.Values.Where(o => !o.Ended && o != self).SelectMany(o => o.Rec.Nodes).ToHashSet(StringComparer.Ordinal),
                PoolsInFlight = ops.Values.SelectMany(o => o.NewPools.Select(p => p.Pool)).ToHashSet(StringComparer.Ordinal),
                Disruptions = disruptions.ToList(),
                Owned = owned,
                Nodes = nodes,
                LiveBlockers = name => snapshotNodes.TryGetValue(name, out var v) ? LiveBlockers(v, book) : [],
                Book = book,
                Thresholds = limits,
            };
        }
    }

    /// <summary>A node's blockers on the live model: its pods and the PDBs covering them now.</summary>
    private List<Blocker> LiveBlockers(NodeView v, PriceBook book)
    {
        var pdbIndex = model.Pdbs.All().GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        return Recommender.NodeBlockers(v, model.PodsOn(v.Name), pdbIndex, book);
    }

    /// <summary>
    /// The policy's decision on <paramref name="world"/>. Fencing: once the leadership term this tick runs on has
    /// ended, nothing is decided at all; the tick is cancelled.
    /// </summary>
    private Refusal? Decide(SafetyWrite write, SafetyOperation? op, SafetyWorld world, CancellationToken ct)
    {
        var why = policy.Check(write, op, world with { TermEnded = ct.IsCancellationRequested });
        if (why?.Reason == RefusalReason.LeaseLost) ct.ThrowIfCancellationRequested();
        return why;
    }

    /// <summary>
    /// Right before every write (Events aside): the policy's check for this write of <paramref name="op"/>. When it passes,
    /// the write follows and changes the world, so the view read earlier in the tick is read again when next needed.
    /// </summary>
    private Refusal? Guard(SafetyWrite write, Operation? op, SafetyWorld world, CancellationToken ct)
    {
        var why = Decide(write, op is null ? null : new SafetyOperation(op.Rec, op.Stage), world, ct);
        if (why is null) tickView = null;
        return why;
    }
}
